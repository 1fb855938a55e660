"""Server-side printing: the meta.k8s.io/v1 Table for any kind (built-in printers, CRD
additionalPrinterColumns, the NAME/AGE fallback) and the row helpers printers share."""

from __future__ import annotations

import datetime as _dt
from typing import Any

import orjson

from k3py.api.duration import since
from k3py.api.jsonpath import get_path
from k3py.api.kinds.registry import AGE_COL, NAME_COL, RowFn, col, hooks_for
from k3py.api.objects import parse_time
from k3py.api.resources import Resource
from k3py.api.selectors import selector_to_string

__all__ = ["table_columns", "table_row", "build_table", "age", "name", "format_labels",
           "format_selector", "containers_images", "CRD_COLUMNS"]


def name(o: dict) -> str:
    return (o.get("metadata") or {}).get("name", "")


def age(o: dict, now: _dt.datetime) -> str:
    return since((o.get("metadata") or {}).get("creationTimestamp"), now)


def format_labels(m: object) -> str:
    """labels.FormatLabels: sorted k=v pairs, `<none>` when empty."""
    if not isinstance(m, dict) or not m:
        return "<none>"
    return ",".join(f"{k}={val}" for k, val in sorted(m.items()))


def format_selector(sel: object) -> str:
    """metav1.FormatLabelSelector: `<none>` for a nil or empty selector."""
    if not isinstance(sel, dict):
        return "<none>"
    return selector_to_string(sel) or "<none>"


def containers_images(pod_spec: object) -> tuple[str, str]:
    cs = (pod_spec or {}).get("containers") or [] if isinstance(pod_spec, dict) else []
    return (",".join(c.get("name", "") for c in cs if isinstance(c, dict)),
            ",".join(c.get("image", "") for c in cs if isinstance(c, dict)))


def _name_age(o: dict, now: _dt.datetime) -> list:
    return [name(o), age(o, now)]


def _created_at(o: dict, now: _dt.datetime) -> list:
    t = parse_time((o.get("metadata") or {}).get("creationTimestamp"))
    return [name(o), t.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t else None]


CREATED_AT = [NAME_COL, col("Created At", "date", AGE_COL["description"])]
CRD_COLUMNS = (CREATED_AT, _created_at)


def _crd_cell(type_: str, value: Any, now: _dt.datetime) -> Any:
    """cellForJSONValue, plus JSONPath text printing for string columns."""
    if value is None:
        return None
    if type_ == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (dict, list)):
            return orjson.dumps(value).decode()
        return str(value)
    if type_ == "integer":
        return int(value) if isinstance(value, (int, float)) and \
            not isinstance(value, bool) else None
    if type_ == "number":
        return float(value) if isinstance(value, (int, float)) and \
            not isinstance(value, bool) else None
    if type_ == "boolean":
        return value if isinstance(value, bool) else None
    if type_ == "date":
        if isinstance(value, str):
            return since(value, now) if parse_time(value) else "<invalid>"
        return None
    return None


def _custom_columns(res: Resource) -> tuple[list[dict], RowFn] | None:
    """A CRD version's additionalPrinterColumns (upstream serves only Age when none are set)."""
    cols = res.extra.get("printer_columns")
    if not cols:
        return None
    defs = [NAME_COL] + [col(c.get("name", ""), c.get("type", "string"),
                             c.get("description", ""), int(c.get("priority", 0) or 0),
                             c.get("format", "")) for c in cols]

    def row(o: dict, now: _dt.datetime) -> list:
        out: list[Any] = [name(o)]
        for c in cols:
            try:
                val = get_path(o, c.get("jsonPath", ""))
            except ValueError:
                val = None
            out.append(_crd_cell(c.get("type", "string"), val, now))
        return out
    return defs, row


def _spec_for(res: Resource) -> tuple[list[dict], RowFn]:
    if res.crd:
        return _custom_columns(res) or ([NAME_COL, AGE_COL], _name_age)
    hooks = hooks_for(res.group, res.kind)
    if hooks.columns is not None and hooks.row is not None:
        return hooks.columns, hooks.row
    return [NAME_COL, AGE_COL], _name_age


def table_columns(res: Resource) -> list[dict]:
    """columnDefinitions for `res` (priority 1 columns show only with -o wide)."""
    return [dict(c) for c in _spec_for(res)[0]]


def table_row(res: Resource, obj: dict, now: _dt.datetime | None = None) -> list:
    """The cells of one object, as upstream's printer computes them (wide: all columns)."""
    return _spec_for(res)[1](obj, now or _dt.datetime.now(_dt.UTC))


def _row_conditions(res: Resource, obj: dict) -> list[dict]:
    if res.group == "" and res.kind == "Pod":
        phase = (obj.get("status") or {}).get("phase")
        if phase == "Succeeded":
            return [{"type": "Completed", "status": "True", "reason": "Succeeded",
                     "message": "The pod has completed successfully."}]
        if phase == "Failed":
            return [{"type": "Completed", "status": "True", "reason": "Failed",
                     "message": "The pod failed."}]
    return []


def build_table(res: Resource, objs: list[dict], now: _dt.datetime | None = None,
                include_object: str = "Metadata") -> dict:
    """The meta.k8s.io/v1 Table; rows carry the object as includeObject asks
    (None | Metadata -> PartialObjectMetadata | Object)."""
    now = now or _dt.datetime.now(_dt.UTC)
    cols, row_fn = _spec_for(res)
    rows = []
    for o in objs:
        r: dict[str, Any] = {"cells": row_fn(o, now)}
        conds = _row_conditions(res, o)
        if conds:
            r["conditions"] = conds
        if include_object == "Object":
            r["object"] = o
        elif include_object != "None":
            r["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": o.get("metadata") or {}}
        rows.append(r)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
            "columnDefinitions": [dict(c) for c in cols], "rows": rows}
