"""Structural openAPIV3 schemas of CustomResourceDefinitions: validation, pruning, defaulting
and unknown-field detection of custom objects, with upstream's messages and field paths (pure).

x-kubernetes-validations (CEL rules) are accepted in schemas but not evaluated here."""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import re
import uuid
from datetime import date, datetime
from typing import Any

from k3py.api.errors import Cause

__all__ = ["validate", "prune", "find_unknown_fields", "apply_defaults", "check_structural",
           "format_value", "type_of"]

_ROOT_KEPT = ("apiVersion", "kind", "metadata")

# ------------------------------------------------------------------ messages as upstream


def _go_float(v: float) -> str:
    if v.is_integer() and abs(v) < 1e21:
        return str(int(v))
    return repr(v).replace("inf", "+Inf")


def format_value(v: Any) -> str:
    """A bad value as apimachinery's field.Error prints it."""
    if v is None:
        return '"null"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return json.dumps(v, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _num(v: Any) -> str:
    return _go_float(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) \
        else str(v)


def _cause(type_: str, path: str, message: str) -> Cause:
    return {"type": type_, "message": message, "field": path}


def _required(path: str, detail: str = "") -> Cause:
    return _cause("FieldValueRequired", path, "Required value" + (f": {detail}" if detail else ""))


def _invalid(path: str, value: Any, detail: str) -> Cause:
    return _cause("FieldValueInvalid", path, f"Invalid value: {format_value(value)}: {detail}")


def _forbidden(path: str, detail: str) -> Cause:
    return _cause("FieldValueForbidden", path, f"Forbidden: {detail}")


def _not_supported(path: str, value: Any, allowed: list) -> Cause:
    quoted = ", ".join(json.dumps(a if isinstance(a, str) else
                                  json.dumps(a, separators=(",", ":"))) for a in allowed)
    return _cause("FieldValueNotSupported", path,
                  f"Unsupported value: {format_value(value)}: supported values: {quoted}")


def _type_invalid(path: str, value: Any, detail: str) -> Cause:
    return _cause("FieldValueTypeInvalid", path, f"Invalid value: {format_value(value)}: {detail}")


def _duplicate(path: str, value: Any) -> Cause:
    return _cause("FieldValueDuplicate", path, f"Duplicate value: {format_value(value)}")


def _too_long(path: str, max_len: int) -> Cause:
    unit = "byte" if max_len == 1 else "bytes"
    return _cause("FieldValueTooLong", path, f"Too long: may not be more than {max_len} {unit}")


def _too_many(path: str, actual: int, max_items: int) -> Cause:
    unit = "item" if max_items == 1 else "items"
    return _cause("FieldValueTooMany", path,
                  f"Too many: {actual}: must have at most {max_items} {unit}")


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ------------------------------------------------------------------ types and formats


def type_of(v: Any) -> str:
    """The openAPI type name of a decoded JSON value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "integer" if v.is_integer() else "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _type_matches(want: str, v: Any) -> bool:
    got = type_of(v)
    return got == want or (want == "number" and got == "integer")


_DURATION = re.compile(r"^([+-]?(\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$|^0$")
_HOSTNAME = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]{0,62})?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,62})?)*$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}([0-9A-Fa-f]{2})$")


def _parses(fn) -> Any:
    def check(s: str) -> bool:
        try:
            return bool(fn(s))
        except ValueError:
            return False
    return check


_is_datetime = _parses(lambda s: datetime.fromisoformat(re.sub("[zZ]$", "+00:00", s)) and
                       ("T" in s.upper() or " " in s))
_is_date = _parses(date.fromisoformat)
_is_byte = _parses(lambda s: base64.b64decode(s, validate=True) is not None)
_is_cidr = _parses(lambda s: ipaddress.ip_network(s, strict=False) and "/" in s)
_is_uuid = _parses(lambda s: uuid.UUID(s) and len(s) == 36)


def _is_ip(s: str, version: int) -> bool:
    return _parses(lambda s: ipaddress.ip_address(s).version == version)(s)


_FORMATS = {  # string formats only, as kube-openapi; unknown formats are not checked
    "date-time": _is_datetime, "datetime": _is_datetime, "date": _is_date, "byte": _is_byte,
    "ipv4": lambda s: _is_ip(s, 4), "ipv6": lambda s: _is_ip(s, 6), "cidr": _is_cidr,
    "uuid": _is_uuid, "mac": lambda s: bool(_MAC.match(s)),
    "hostname": lambda s: len(s) <= 255 and bool(_HOSTNAME.match(s)),
    "email": lambda s: bool(_EMAIL.match(s)), "duration": lambda s: bool(_DURATION.match(s)),
}


# ------------------------------------------------------------------ validation


def validate(schema: dict | None, obj: Any, path: str = "") -> list[Cause]:
    """Causes for every violation of `schema` by `obj` (upstream CR validation)."""
    out: list[Cause] = []
    if schema:
        _validate(schema, obj, path, out, root=not path)
    return out


def _validate(s: dict, v: Any, path: str, out: list[Cause], root: bool = False) -> None:
    name = path or "."
    if v is None:
        if not s.get("nullable") and (s.get("type") or s.get("x-kubernetes-int-or-string")):
            want = "integer,string" if s.get("x-kubernetes-int-or-string") else s["type"]
            out.append(_type_invalid(path, "null",
                                     f'{name} in body must be of type {want}: "null"'))
        return
    if s.get("x-kubernetes-int-or-string"):
        if type_of(v) not in ("integer", "string"):
            out.append(_type_invalid(path, type_of(v), f"{name} in body must be of type "
                                     f"integer,string: {json.dumps(type_of(v))}"))
            return
    elif s.get("type") and not _type_matches(s["type"], v):
        got = type_of(v)
        out.append(_type_invalid(path, got,
                                 f"{name} in body must be of type {s['type']}: {json.dumps(got)}"))
        return
    _value_checks(s, v, path, name, out)
    if isinstance(v, dict):
        _validate_object(s, v, path, out, root)
    elif isinstance(v, list):
        _validate_array(s, v, path, out)
    _validate_combinators(s, v, path, name, out)


def _value_checks(s: dict, v: Any, path: str, name: str, out: list[Cause]) -> None:
    if "enum" in s and s["enum"] is not None and v not in s["enum"]:
        out.append(_not_supported(path, v, s["enum"]))
    if isinstance(v, str):
        if s.get("maxLength") is not None and len(v) > s["maxLength"]:
            out.append(_too_long(path, s["maxLength"]))
        if s.get("minLength") is not None and len(v) < s["minLength"]:
            out.append(_invalid(path, v, f"{name} in body should be at least "
                                f"{s['minLength']} chars long"))
        if s.get("pattern"):
            try:
                ok = re.search(s["pattern"], v) is not None
            except re.error:
                ok = True
            if not ok:
                out.append(_invalid(path, v, f"{name} in body should match '{s['pattern']}'"))
        fmt = s.get("format")
        if fmt in _FORMATS and not _FORMATS[fmt](v):
            out.append(_type_invalid(path, v, f"{name} in body must be of type {fmt}: "
                                     f"{json.dumps(v, ensure_ascii=False)}"))
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        mx, mn = s.get("maximum"), s.get("minimum")
        if mx is not None:
            if s.get("exclusiveMaximum") and v >= mx:
                out.append(_invalid(path, v, f"{name} in body should be less than {_num(mx)}"))
            elif v > mx:
                out.append(_invalid(path, v, f"{name} in body should be less than or equal "
                                    f"to {_num(mx)}"))
        if mn is not None:
            if s.get("exclusiveMinimum") and v <= mn:
                out.append(_invalid(path, v, f"{name} in body should be greater than {_num(mn)}"))
            elif v < mn:
                out.append(_invalid(path, v, f"{name} in body should be greater than or equal "
                                    f"to {_num(mn)}"))
        mult = s.get("multipleOf")
        if mult and (v / mult) != int(v / mult):
            out.append(_invalid(path, v, f"{name} in body should be a multiple of {_num(mult)}"))


def _validate_object(s: dict, v: dict, path: str, out: list[Cause], root: bool) -> None:
    name = path or "."
    if s.get("maxProperties") is not None and len(v) > s["maxProperties"]:
        out.append(_too_many(path, len(v), s["maxProperties"]))
    if s.get("minProperties") is not None and len(v) < s["minProperties"]:
        out.append(_invalid(path, len(v), f"{name} in body should have at least "
                            f"{s['minProperties']} properties"))
    props = s.get("properties") or {}
    for req in s.get("required") or ():
        if req not in v:
            out.append(_required(_child(path, req)))
    addl = s.get("additionalProperties")
    for key, val in v.items():
        if root and key == "metadata":
            continue  # object metadata is validated by the generic ObjectMeta rules
        sub = props.get(key)
        if sub is not None:
            _validate(sub, val, _child(path, key), out)
        elif isinstance(addl, dict):
            _validate(addl, val, _child(path, key), out)
        elif addl is False and props:
            out.append(_forbidden(_child(path, key), f"{key} in body is a forbidden property"))
    if s.get("x-kubernetes-embedded-resource"):
        for key in ("apiVersion", "kind"):
            if not v.get(key):
                out.append(_required(_child(path, key), "must not be empty"))


def _item_key(item: Any, keys: list[str]) -> Any:
    if not isinstance(item, dict):
        return None
    return {k: item.get(k) for k in keys if k in item}


def _validate_array(s: dict, v: list, path: str, out: list[Cause]) -> None:
    name = path or "."
    if s.get("maxItems") is not None and len(v) > s["maxItems"]:
        out.append(_too_many(path, len(v), s["maxItems"]))
    if s.get("minItems") is not None and len(v) < s["minItems"]:
        out.append(_invalid(path, len(v), f"{name} in body should have at least "
                            f"{s['minItems']} items"))
    if s.get("uniqueItems"):
        seen = [json.dumps(i, sort_keys=True) for i in v]
        if len(set(seen)) != len(seen):
            out.append(_invalid(path, v, f"{name} in body shouldn't contain duplicates"))
    items = s.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(v):
            _validate(items, item, f"{path}[{i}]", out)
    list_type = s.get("x-kubernetes-list-type")
    if list_type == "set":
        seen_set: list[str] = []
        for i, item in enumerate(v):
            k = json.dumps(item, sort_keys=True)
            if k in seen_set:
                out.append(_duplicate(f"{path}[{i}]", item))
            seen_set.append(k)
    elif list_type == "map":
        keys = list(s.get("x-kubernetes-list-map-keys") or ())
        seen_keys: list[str] = []
        for i, item in enumerate(v):
            kv = _item_key(item, keys)
            if kv is None:
                continue
            k = json.dumps(kv, sort_keys=True)
            if k in seen_keys:
                out.append(_duplicate(f"{path}[{i}]", kv))
            seen_keys.append(k)


def _validate_combinators(s: dict, v: Any, path: str, name: str, out: list[Cause]) -> None:
    # Branches of anyOf/oneOf/allOf/not only add value validation (structural rule), so
    # they are checked against the value without their own type (a missing type passes).
    for sub in s.get("allOf") or ():
        if _errs(sub, v, path):
            out.append(_invalid(path, v, f"{name} in body must validate all the schemas (allOf)"))
            out.extend(_errs(sub, v, path))
            break
    if s.get("anyOf"):
        if _int_or_string_anyof(s["anyOf"]) and type_of(v) in ("integer", "string"):
            pass
        elif not any(not _errs(sub, v, path) for sub in s["anyOf"]):
            out.append(_invalid(path, v,
                                f"{name} in body must validate at least one schema (anyOf)"))
    if s.get("oneOf"):
        matched = sum(1 for sub in s["oneOf"] if not _errs(sub, v, path))
        if matched != 1:
            out.append(_invalid(path, v, f"{name} in body must validate one and only one "
                                "schema (oneOf)"))
    if isinstance(s.get("not"), dict) and not _errs(s["not"], v, path):
        out.append(_invalid(path, v, f"{name} in body shouldn't validate the schema (not)"))


def _errs(sub: dict, v: Any, path: str) -> list[Cause]:
    out: list[Cause] = []
    _validate(sub, v, path, out)
    return out


def _int_or_string_anyof(branches: list) -> bool:
    return len(branches) == 2 and {b.get("type") for b in branches if isinstance(b, dict)} == \
        {"integer", "string"}


# ------------------------------------------------------------------ pruning


def _preserves(s: dict) -> bool:
    return bool(s.get("x-kubernetes-preserve-unknown-fields"))


def prune(schema: dict | None, obj: Any) -> None:
    """Drop fields the schema does not specify (unless x-kubernetes-preserve-unknown-fields);
    apiVersion, kind and metadata at the root and in embedded resources are always kept."""
    if schema and isinstance(obj, dict):
        _prune(schema, obj, root=True)


def _prune(s: dict, v: Any, root: bool = False) -> None:
    if isinstance(v, dict):
        props = s.get("properties") or {}
        addl = s.get("additionalProperties")
        keep_meta = root or bool(s.get("x-kubernetes-embedded-resource"))
        for key in list(v):
            if keep_meta and key in _ROOT_KEPT:
                if key == "metadata" or key not in props:
                    continue
            sub = props.get(key)
            if sub is None and isinstance(addl, dict):
                sub = addl
            if sub is None:
                if not (_preserves(s) or addl is True):
                    del v[key]
                continue
            if v[key] is None and not sub.get("nullable") and "default" not in sub:
                del v[key]  # upstream drops non-nullable nulls without a default
                continue
            _prune(sub, v[key])
    elif isinstance(v, list) and isinstance(s.get("items"), dict):
        for item in v:
            _prune(s["items"], item)


def find_unknown_fields(schema: dict | None, obj: Any) -> list[str]:
    """Paths of fields pruning would drop, for fieldValidation=Strict/Warn."""
    out: list[str] = []
    if schema and isinstance(obj, dict):
        _unknown(schema, obj, "", out, root=True)
    return out


def _unknown(s: dict, v: Any, path: str, out: list[str], root: bool = False) -> None:
    if isinstance(v, dict):
        props = s.get("properties") or {}
        addl = s.get("additionalProperties")
        keep_meta = root or bool(s.get("x-kubernetes-embedded-resource"))
        for key, val in v.items():
            if keep_meta and key in _ROOT_KEPT and (key == "metadata" or key not in props):
                continue
            sub = props.get(key)
            if sub is None and isinstance(addl, dict):
                sub = addl
            if sub is None:
                if not (_preserves(s) or addl is True):
                    out.append(_child(path, key))
                continue
            _unknown(sub, val, _child(path, key), out)
    elif isinstance(v, list) and isinstance(s.get("items"), dict):
        for i, item in enumerate(v):
            _unknown(s["items"], item, f"{path}[{i}]", out)


# ------------------------------------------------------------------ defaulting


def apply_defaults(schema: dict | None, obj: Any) -> None:
    """Set `default` values of missing (or null, non-nullable) fields, in place."""
    if schema and isinstance(obj, (dict, list)):
        _default(schema, obj)


def _default(s: dict, v: Any) -> None:
    if isinstance(v, dict):
        props = s.get("properties") or {}
        for key, sub in props.items():
            if "default" in sub and (key not in v or (v[key] is None and
                                                      not sub.get("nullable"))):
                v[key] = copy.deepcopy(sub["default"])
        for key, val in v.items():
            sub = props.get(key)
            if sub is None and isinstance(s.get("additionalProperties"), dict):
                sub = s["additionalProperties"]
            if sub is not None and isinstance(val, (dict, list)):
                _default(sub, val)
    elif isinstance(v, list) and isinstance(s.get("items"), dict):
        items = s["items"]
        for i, item in enumerate(v):
            if item is None and "default" in items and not items.get("nullable"):
                v[i] = copy.deepcopy(items["default"])
            elif isinstance(item, (dict, list)):
                _default(items, item)


# ------------------------------------------------------------------ structural schema check

_TYPES = ("array", "boolean", "integer", "number", "object", "string")
_UNSUPPORTED = (("id", "id is not supported"), ("$ref", "$ref is not supported"),
                ("additionalItems", "additionalItems is not supported"),
                ("patternProperties", "patternProperties is not supported"),
                ("definitions", "definitions is not supported"),
                ("dependencies", "dependencies is not supported"))
_NOT_IN_BRANCHES = (("type", "must be empty to be structural"),
                    ("additionalProperties", "must be undefined to be structural"),
                    ("default", "must be undefined to be structural"),
                    ("nullable", "must be false to be structural"),
                    ("x-kubernetes-preserve-unknown-fields", "must be false to be structural"),
                    ("x-kubernetes-embedded-resource", "must be false to be structural"),
                    ("x-kubernetes-int-or-string", "must be false to be structural"))


def check_structural(schema: Any, path: str) -> list[Cause]:
    """Causes that make `schema` (an openAPIV3Schema at `path`) not structural, as the
    apiextensions validation reports them."""
    out: list[Cause] = []
    if not isinstance(schema, dict):
        out.append(_invalid(path, "", "must be an object"))
        return out
    if schema.get("nullable"):
        out.append(_forbidden(f"{path}.nullable", "nullable cannot be true at the root"))
    _check(schema, path, "root", out)
    return out


def _check(s: dict, path: str, lvl: str, out: list[Cause]) -> None:
    t = s.get("type")
    if t is not None and t not in _TYPES:
        if t == "null":
            out.append(_forbidden(f"{path}.type",
                                  "type cannot be set to null, use nullable as an alternative"))
        else:
            out.append(_not_supported(f"{path}.type", t, list(_TYPES)))
    for key, msg in _UNSUPPORTED:
        if key in s:
            out.append(_forbidden(f"{path}.{key}", msg))
    if s.get("uniqueItems"):
        out.append(_forbidden(f"{path}.uniqueItems", "uniqueItems cannot be set to true since "
                              "the runtime complexity becomes quadratic"))
    if isinstance(s.get("items"), list):
        out.append(_forbidden(f"{path}.items", "items must be a schema object and not an array"))
    if t == "array" and s.get("items") is None:
        out.append(_required(f"{path}.items", "must be specified"))
    if isinstance(s.get("items"), dict):
        _check(s["items"], f"{path}.items", "item", out)
    props = s.get("properties") or {}
    if props and isinstance(s.get("additionalProperties"), (dict, bool)) and \
            s.get("additionalProperties") is not False:
        out.append(_forbidden(f"{path}.additionalProperties",
                              "additionalProperties and properties are mutual exclusive"))
    for key, sub in props.items():
        if isinstance(sub, dict):
            _check(sub, f"{path}.properties[{key}]", "field", out)
    addl = s.get("additionalProperties")
    if addl is not None and lvl == "root":
        out.append(_forbidden(f"{path}.additionalProperties", "must not be used at the root"))
    if isinstance(addl, dict):
        _check(addl, f"{path}.additionalProperties", "field", out)
    if s.get("x-kubernetes-int-or-string") and s.get("x-kubernetes-preserve-unknown-fields"):
        out.append(_invalid(f"{path}.x-kubernetes-preserve-unknown-fields", True,
                            "must be false if x-kubernetes-int-or-string is true"))
    if s.get("x-kubernetes-preserve-unknown-fields") is False:
        out.append(_invalid(f"{path}.x-kubernetes-preserve-unknown-fields", False,
                            "must be true or undefined"))
    embedded = bool(s.get("x-kubernetes-embedded-resource"))
    if embedded and t != "object":
        if not t:
            out.append(_required(f"{path}.type",
                                 "must be object if x-kubernetes-embedded-resource is true"))
        else:
            out.append(_invalid(f"{path}.type", t,
                                "must be object if x-kubernetes-embedded-resource is true"))
    elif not t and not s.get("x-kubernetes-int-or-string") and \
            not s.get("x-kubernetes-preserve-unknown-fields"):
        where = {"root": "at the root", "item": "for specified array items",
                 "field": "for specified object fields"}[lvl]
        out.append(_required(f"{path}.type", f"must not be empty {where}"))
    if lvl == "root" and t and t != "object":
        out.append(_invalid(f"{path}.type", t, "must be object at the root"))
    if (lvl == "root" or embedded) and isinstance(props.get("metadata"), dict):
        md = props["metadata"]
        if md.get("type") != "object":
            out.append(_invalid(f"{path}.properties[metadata].type", md.get("type") or "",
                                "must be object"))
        if lvl == "root" and (set(md) - {"type", "description"} - {"properties"} or
                              set(md.get("properties") or {}) - {"name", "generateName"}):
            out.append(_forbidden(f"{path}.properties[metadata]", "must not specify anything "
                                  "other than name and generateName, but metadata is implicitly "
                                  "specified"))
    _check_list_type(s, path, out)
    for comb in ("allOf", "anyOf", "oneOf"):
        branches = s.get(comb) or ()
        if comb == "anyOf" and _int_or_string_anyof(branches):
            continue  # the int-or-string idiom: anyOf [{type: integer}, {type: string}]
        for i, sub in enumerate(branches):
            if isinstance(sub, dict):
                _check_branch(sub, f"{path}.{comb}[{i}]", out)
    if isinstance(s.get("not"), dict):
        _check_branch(s["not"], f"{path}.not", out)


def _check_branch(s: dict, path: str, out: list[Cause]) -> None:
    for key, msg in _NOT_IN_BRANCHES:
        if s.get(key) is not None and s.get(key) is not False:
            out.append(_forbidden(f"{path}.{key}", msg))
    if s.get("anyOf") and not _int_or_string_anyof(s["anyOf"]):
        for i, sub in enumerate(s["anyOf"]):
            if isinstance(sub, dict):
                _check_branch(sub, f"{path}.anyOf[{i}]", out)
    for key, sub in (s.get("properties") or {}).items():
        if isinstance(sub, dict):
            _check_branch(sub, f"{path}.properties[{key}]", out)
    if isinstance(s.get("items"), dict):
        _check_branch(s["items"], f"{path}.items", out)


def _check_list_type(s: dict, path: str, out: list[Cause]) -> None:
    lt = s.get("x-kubernetes-list-type")
    if lt is not None:
        if lt not in ("atomic", "set", "map"):
            out.append(_not_supported(f"{path}.x-kubernetes-list-type", lt,
                                      ["atomic", "set", "map"]))
        if s.get("type") != "array":
            out.append(_invalid(f"{path}.type", s.get("type") or "",
                                "must be array if x-kubernetes-list-type is specified"))
    keys = s.get("x-kubernetes-list-map-keys")
    if keys and lt != "map":
        out.append(_invalid(f"{path}.x-kubernetes-list-type", lt or "",
                            "must be map if x-kubernetes-list-map-keys is non-empty"))
    if lt == "map":
        if not keys:
            out.append(_required(f"{path}.x-kubernetes-list-map-keys",
                                 "must not be empty if x-kubernetes-list-type is map"))
        items = s.get("items") if isinstance(s.get("items"), dict) else {}
        if items.get("type") != "object":
            out.append(_invalid(f"{path}.items.type", items.get("type") or "",
                                "must be object if parent array's x-kubernetes-list-type is map"))
        elif keys and set(keys) - set(items.get("properties") or {}):
            out.append(_invalid(f"{path}.x-kubernetes-list-map-keys", keys,
                                "entries must all be names of item properties"))
    mt = s.get("x-kubernetes-map-type")
    if mt is not None and mt not in ("atomic", "granular"):
        out.append(_not_supported(f"{path}.x-kubernetes-map-type", mt, ["atomic", "granular"]))
