"""The selectableFields of a CustomResourceDefinition version: their validation against the
version's schema, with upstream's rules and messages, and the field names they serve.

k3py.server.crds validates each version's list with `validate` and puts `field_names` on the
version's Resource; k3py.api.selectors then allows those names in a field selector on that
version (and reads their values from the object as served in it)."""

from __future__ import annotations

from typing import Any

from k3py.api import structural
from k3py.api.errors import Cause, field_cause
from k3py.api.validation import duplicate, required

__all__ = ["MAX_SELECTABLE_FIELDS", "validate", "field_names"]

MAX_SELECTABLE_FIELDS = 8
_TYPES = ("string", "boolean", "integer")
_TYPE_DETAIL = ("must point to a field of type string, boolean or integer. Enum string fields "
                "and strings with formats are allowed.")


class _PathError(ValueError):
    """A jsonPath that does not name one field of the schema (the message is upstream's)."""


def _invalid(path: str, value: Any, detail: str) -> Cause:
    return field_cause(path, f"Invalid value: {structural.format_value(value)}: {detail}")


def _tokens(json_path: str) -> list[str]:
    """The path split as upstream's field path scanner splits it: ".", "[" and "]" alone, a
    single-quoted string whole (delimiters inside it included), other text between them."""
    out, i = [], 0
    while i < len(json_path):
        if json_path[i] in ".[]":
            out.append(json_path[i])
            i += 1
            continue
        j = i + 1
        if json_path[i] == "'":
            while j < len(json_path) and not (json_path[j] == "'" and json_path[j - 1] != "\\"):
                j += 1
            j = min(j + 1, len(json_path))
        else:
            while j < len(json_path) and json_path[j] not in ".[]":
                j += 1
        out.append(json_path[i:j])
        i = j
    return out


def _walk(json_path: str, schema: Any) -> tuple[str, str, Any]:
    """(the field path as apimachinery prints it, its first element, the schema it points
    to) of a simple path such as ".spec.color"; _PathError when it is not one."""
    tokens = iter(_tokens(json_path))
    printed, root = "", ""
    for tok in tokens:
        if tok == "[":
            raise _PathError("array notation is not allowed")
        if tok != ".":
            raise _PathError(f"expected [ or . but got: {tok}")
        name = next(tokens, None)
        if name is None:
            raise _PathError("unexpected end of JSON path")
        node = schema if isinstance(schema, dict) else {}
        if node.get("properties") is not None:
            schema = (node["properties"] or {}).get(name)
            if not isinstance(schema, dict):
                raise _PathError("does not refer to a valid field")
            printed = f"{printed}.{name}" if printed else name
        elif isinstance(node.get("additionalProperties"), dict):
            schema = node["additionalProperties"]
            printed = f"{printed}[{name}]"
        else:
            raise _PathError("does not refer to a valid field")
        root = root or printed
    return printed, root, schema


def validate(fields: Any, schema: Any, path: str, allow_too_many: bool = False) -> list[Cause]:
    """Causes for a version's selectableFields at `path` (spec.versions[i].selectableFields).
    `allow_too_many`: an update that keeps a list longer than the limit unchanged."""
    if not isinstance(fields, list):
        return [_invalid(path, fields, "must be a list")]
    out: list[Cause] = []
    unique: set[str] = set()
    for i, item in enumerate(fields):
        at = f"{path}[{i}].jsonPath"
        json_path = item.get("jsonPath") if isinstance(item, dict) else None
        if not json_path:
            out.append(required(at))
            continue
        if not isinstance(json_path, str):
            out.append(_invalid(at, json_path, "must be a string"))
            continue
        try:
            printed, root, found = _walk(json_path, schema)
        except _PathError as e:
            out.append(_invalid(at, json_path, f"is an invalid path: {e}"))
            continue
        if root == "metadata":
            out.append(_invalid(at, json_path, "must not point to fields in metadata"))
        if not isinstance(found, dict) or found.get("type") not in _TYPES:
            out.append(_invalid(at, json_path, _TYPE_DETAIL))
        if printed in unique:
            out.append(duplicate(at, json_path))
        unique.add(printed)
    if len(unique) > MAX_SELECTABLE_FIELDS and not allow_too_many:
        out.append(field_cause(path, f"Too many: {len(unique)}: must have at most "
                                     f"{MAX_SELECTABLE_FIELDS} items", "FieldValueTooMany"))
    return out


def field_names(fields: Any) -> tuple[str, ...]:
    """The field selector labels of a (validated) version's selectableFields: each jsonPath
    without its leading "."."""
    return tuple(str(f["jsonPath"]).removeprefix(".") for f in fields or ()
                 if isinstance(f, dict) and f.get("jsonPath"))
