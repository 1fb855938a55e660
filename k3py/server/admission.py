"""Admission for every write: strategies (status vs spec, generation), defaults, validation,
patch application, managed fields, version conversion. Called only by the registry.

Per-kind facts live in k3py/api/kinds (pure); this module decides the order they run in."""

from __future__ import annotations

from typing import Any

from k3py.api import decoding, errors, kinds, selectors
from k3py.api import patch as patchlib
from k3py.api.objects import deepcopy
from k3py.api.resources import Resource

__all__ = [
    "convert", "label_selector", "field_selector", "prepare_for_create", "prepare_for_update",
    "default", "check_valid", "track_managed_fields", "apply_patch", "parse_apply_body",
    "server_side_apply", "needs_finalization", "on_terminating", "finalize_when_empty",
    "PATCH_TYPES", "register_validator", "register_converter", "register_preparer",
]

PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "apply-cbor",
}

_EXTRA_VALIDATORS: list[Any] = []  # CRD schema validation registers here


def register_validator(fn: Any) -> None:
    _EXTRA_VALIDATORS.append(fn)


_CONVERTERS: list[Any] = []  # fn(res, obj) -> converted obj or None (CRDs register here)


def register_converter(fn: Any) -> None:
    _CONVERTERS.append(fn)


# fn(res, obj, old | None, subresource) -> new obj or None (in place); runs after the kind's
# own strategy. CRDs register the custom-resource status/spec split here.
_PREPARERS: list[Any] = []


def register_preparer(fn: Any) -> None:
    _PREPARERS.append(fn)


_EVENT_FIELDS = (  # core/v1 Event field <-> events.k8s.io/v1 Event field
    ("involvedObject", "regarding"), ("message", "note"), ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"), ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"), ("reportingComponent", "reportingController"),
)


def _convert_event(obj: dict, to_core: bool) -> dict:
    out = dict(obj)
    for core, new in _EVENT_FIELDS:
        src, dst = (new, core) if to_core else (core, new)
        if src in out:
            out[dst] = out.pop(src)
    out["apiVersion"] = "v1" if to_core else "events.k8s.io/v1"
    return out


def convert(res: Resource, obj: dict) -> dict:
    """Present a stored object in the served version of its resource."""
    for fn in _CONVERTERS:
        out = fn(res, obj)
        if out is not None:
            return out
    if res.kind == "Event" and obj.get("kind") == "Event":
        if res.group == "events.k8s.io" and obj.get("apiVersion") == "v1":
            return _convert_event(obj, to_core=False)
        if res.group == "" and obj.get("apiVersion") == "events.k8s.io/v1":
            return _convert_event(obj, to_core=True)
    obj["apiVersion"] = res.api_version
    return obj


def label_selector(s: str):
    return selectors.parse_label_selector(s) if s else None


def field_selector(s: str, res: Resource):
    return selectors.parse_field_selector(s, res) if s else None


def prepare_for_create(res: Resource, obj: dict) -> None:
    kinds.prepare_for_create(res, obj)
    for fn in _PREPARERS:
        fn(res, obj, None, "")


def prepare_for_update(res: Resource, obj: dict, old: dict, subresource: str) -> dict:
    new = kinds.prepare_for_update(res, obj, old, subresource)
    for fn in _PREPARERS:
        new = fn(res, new, old, subresource) or new
    return new


def default(res: Resource, obj: dict, old: dict | None = None) -> None:
    kinds.default(res, obj, old)


def check_valid(res: Resource, obj: dict, old: dict | None = None) -> None:
    causes = list(kinds.validate(res, obj, old))
    for fn in _EXTRA_VALIDATORS:
        causes.extend(fn(res, obj, old) or [])
    if causes:
        name = (obj.get("metadata") or {}).get("name") or ""
        raise errors.invalid(res.group, res.kind, name, causes)


def track_managed_fields(new: dict, old: dict | None, manager: str, operation: str) -> None:
    try:
        from k3py.api import apply as applylib
    except ImportError:  # pragma: no cover - apply engine not present
        return
    applylib.update_managed_fields(old, new, manager, operation)


def parse_apply_body(body: bytes) -> dict:
    obj = decoding.load_yaml(body, "YAML")
    if not isinstance(obj, dict):
        raise errors.bad_request("apply patch must be an object")
    return obj


def server_side_apply(res: Resource, live: dict | None, applied: dict, manager: str,
                      force: bool) -> dict:
    if not manager:
        raise errors.bad_request("PATCH, application/apply-patch+yaml requires fieldManager "
                                 "to be set")
    from k3py.api import apply as applylib
    return applylib.server_side_apply(live, applied, manager, force, patchlib.schema_lookup)


def apply_patch(res: Resource, cur: dict, body: bytes, patch_type: str, manager: str,
                force: bool) -> dict:
    if patch_type == "apply":
        return server_side_apply(res, cur, parse_apply_body(body), manager, force)
    patch = decoding.load_json(body, "patch")
    doc = deepcopy(cur)
    if patch_type == "json":
        if not isinstance(patch, list):
            raise errors.bad_request("json patch must be a list of operations")
        return patchlib.apply_json_patch(doc, patch)
    if not isinstance(patch, dict):
        raise errors.bad_request("patch must be a JSON object")
    if patch_type == "merge" or res.crd:
        return patchlib.apply_merge_patch(doc, patch)
    if patch_type == "strategic":
        return patchlib.apply_strategic_merge_patch(doc, patch, patchlib.schema_lookup(
            res.api_version, res.kind))
    raise errors.unsupported_media_type(patch_type)


def unknown_fields(res: Resource, obj: dict) -> list[str]:
    """Dotted paths of fields the schema of `res` does not know (for fieldValidation)."""
    if res.crd:
        if res.extra.get("preserve_unknown_fields"):
            return []
        from k3py.api import structural
        return structural.find_unknown_fields(res.extra.get("schema"), obj)
    finder = getattr(patchlib, "find_unknown_fields", None)
    return list(finder(res.api_version, res.kind, obj)) if finder else []


def needs_finalization(res: Resource, obj: dict) -> bool:
    """Objects that wait for a controller before they go (namespaces with spec.finalizers)."""
    if res.group == "" and res.kind == "Namespace":
        return bool((obj.get("spec") or {}).get("finalizers"))
    return False


def on_terminating(res: Resource, obj: dict) -> None:
    if res.group == "" and res.kind == "Namespace":
        obj.setdefault("status", {})["phase"] = "Terminating"


def finalize_when_empty(res: Resource, obj: dict) -> bool:
    """A terminating object whose finalizers are all gone is removed by the same write."""
    return not needs_finalization(res, obj)
