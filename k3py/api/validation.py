"""Name, label and annotation validators with upstream's exact messages; no I/O.

Used by k3py.api.kinds validation, selectors and CRD validation (apimachinery util/validation)."""

from __future__ import annotations

import re
from collections.abc import Callable

from k3py.api.errors import Cause, field_cause

__all__ = ["dns1123_subdomain", "dns1123_label", "dns1035_label", "path_segment_name",
           "qualified_name", "label_key", "label_value", "required", "invalid_value",
           "not_supported", "duplicate", "forbidden", "too_long", "check_labels",
           "check_annotations", "check_object_meta", "check_object_meta_update", "fmt_value",
           "SUBDOMAIN_MSG", "LABEL_MSG", "DNS1035_MSG", "NameCheck"]

NameCheck = Callable[[str], list[str]]

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QNAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LVALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                 "characters, '-' or '.', and must start and end with an alphanumeric character "
                 "(e.g. 'example.com', regex used for validation is "
                 "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
             "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
             "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
               "start with an alphabetic character, and end with an alphanumeric character "
               "(e.g. 'my-name',  or 'abc-123', regex used for validation is "
               "'[a-z]([-a-z0-9]*[a-z0-9])?')")
_QNAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
              "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', "
              "regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
_LVALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, "
               "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
               "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
               "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


def _go_scalar(v: object) -> str:
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    return str(v)


def fmt_value(v: object) -> str:
    """How field.Invalid prints a value (Go's %#v for maps and lists of strings)."""
    if isinstance(v, dict):
        inner = ", ".join(f"{_go_scalar(str(k))}:{_go_scalar(val)}"
                          for k, val in sorted(v.items()))
        return "map[string]string{" + inner + "}"
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return "[]string{" + ", ".join(_go_scalar(x) for x in v) + "}"
    return _go_scalar(v)


def required(field: str, detail: str = "") -> Cause:
    return field_cause(field, "Required value" + (f": {detail}" if detail else ""),
                       "FieldValueRequired")


def invalid_value(field: str, value: object, detail: str) -> Cause:
    msg = f"Invalid value: {fmt_value(value)}"
    return field_cause(field, f"{msg}: {detail}" if detail else msg, "FieldValueInvalid")


def not_supported(field: str, value: object, supported: list[str]) -> Cause:
    sv = ", ".join(f'"{s}"' for s in supported)
    return field_cause(field, f"Unsupported value: {fmt_value(value)}: supported values: {sv}",
                       "FieldValueNotSupported")


def duplicate(field: str, value: object) -> Cause:
    return field_cause(field, f"Duplicate value: {fmt_value(value)}", "FieldValueDuplicate")


def forbidden(field: str, detail: str) -> Cause:
    return field_cause(field, f"Forbidden: {detail}", "FieldValueForbidden")


def too_long(field: str, limit: int) -> Cause:
    return field_cause(field, f"Too long: may not be more than {limit} bytes",
                       "FieldValueTooLong")


def dns1123_subdomain(value: str) -> list[str]:
    out = []
    if len(value) > 253:
        out.append("must be no more than 253 characters")
    if not _SUBDOMAIN.match(value):
        out.append(SUBDOMAIN_MSG)
    return out


def dns1123_label(value: str) -> list[str]:
    out = []
    if len(value) > 63:
        out.append("must be no more than 63 characters")
    if not _LABEL.match(value):
        out.append(LABEL_MSG)
    return out


def dns1035_label(value: str) -> list[str]:
    out = []
    if len(value) > 63:
        out.append("must be no more than 63 characters")
    if not _1035.match(value):
        out.append(DNS1035_MSG)
    return out


# Upstream bounds a path-segment name only by etcd's request size; the datastore's key index
# (postgres.py) holds keys of up to 2 kB, so names stop well short of that.
PATH_SEGMENT_NAME_MAX = 1024


def path_segment_name(name: str) -> list[str]:
    """ValidatePathSegmentName (RBAC objects), with a length bound of our own."""
    if name in (".", ".."):
        return [f"may not be '{name}'"]
    out = [f"may not contain '{c}'" for c in ("/", "%") if c in name]
    if len(name.encode()) > PATH_SEGMENT_NAME_MAX:
        out.append(f"must be no more than {PATH_SEGMENT_NAME_MAX} bytes")
    return out


def qualified_name(value: str) -> list[str]:
    """IsQualifiedName: `[prefix/]name`, used for label and annotation keys."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs += ["prefix part " + m for m in dns1123_subdomain(prefix)]
    else:
        return ["a qualified name " + _QNAME_MSG + " with an optional DNS subdomain prefix and "
                "'/' (e.g. 'example.com/MyName')"]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not _QNAME.match(name):
        errs.append("name part " + _QNAME_MSG)
    return errs


label_key = qualified_name


def label_value(value: object) -> list[str]:
    if not isinstance(value, str):
        return ["must be a string"]
    out = []
    if len(value) > 63:
        out.append("must be no more than 63 characters")
    if not _LVALUE.match(value):
        out.append(_LVALUE_MSG)
    return out


def check_labels(labels: object, field: str) -> list[Cause]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [invalid_value(field, labels, "must be a map of strings")]
    causes = []
    for k, v in labels.items():
        causes += [invalid_value(field, k, msg) for msg in qualified_name(str(k))]
        causes += [invalid_value(field, v, msg) for msg in label_value(v)]
    return causes


def check_annotations(ann: object, field: str) -> list[Cause]:
    if ann is None:
        return []
    if not isinstance(ann, dict):
        return [invalid_value(field, ann, "must be a map of strings")]
    causes = []
    total = 0
    for k, v in ann.items():
        causes += [invalid_value(field, k, msg) for msg in qualified_name(str(k).lower())]
        if not isinstance(v, str):
            causes.append(invalid_value(f"{field}[{k}]", v, "must be a string"))
        else:
            total += len(k) + len(v)
    if total > 256 * 1024:
        causes.append(too_long(field, 256 * 1024))
    return causes


def check_object_meta(md: dict, name_check: NameCheck = dns1123_subdomain) -> list[Cause]:
    causes = []
    name = md.get("name") or ""
    gen = md.get("generateName") or ""
    if gen:
        # a generated name appends 5 characters, so only the prefix's shape is checked
        causes += [invalid_value("metadata.generateName", gen, m)
                   for m in name_check(gen[:-1] + "a" if len(gen) > 1 and gen.endswith("-")
                                         else gen)]
    if not name:
        if not gen:
            causes.append(required("metadata.name", "name or generateName is required"))
    else:
        causes += [invalid_value("metadata.name", name, m) for m in name_check(name)]
    causes += check_labels(md.get("labels"), "metadata.labels")
    causes += check_annotations(md.get("annotations"), "metadata.annotations")
    for i, f in enumerate(md.get("finalizers") or []):
        if not isinstance(f, str):
            continue
        causes += [invalid_value(f"metadata.finalizers[{i}]", f, m) for m in qualified_name(f)]
    return causes + check_owner_references(md.get("ownerReferences"))


def check_owner_references(refs: object) -> list[Cause]:
    """ValidateOwnerReferences: each names its owner fully; at most one is the controller."""
    if not isinstance(refs, list):
        return []
    causes = []
    controllers = 0
    for ref in refs:
        if not isinstance(ref, dict):
            continue
        for key in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(key):
                causes.append(invalid_value(f"metadata.ownerReferences.{key}", ref.get(key, ""),
                                            f"{key} must not be empty"))
        controllers += ref.get("controller") is True
    if controllers > 1:
        causes.append(invalid_value("metadata.ownerReferences", refs,
                                    "Only one reference can have Controller set to true"))
    return causes


def check_object_meta_update(new_md: dict, old_md: dict) -> list[Cause]:
    """ValidateObjectMetaUpdate: name, namespace, uid, creationTimestamp never change."""
    causes = []
    for key in ("name", "namespace", "uid", "creationTimestamp"):
        if key in old_md and new_md.get(key, old_md[key]) != old_md[key]:
            causes.append(invalid_value(f"metadata.{key}", new_md.get(key),
                                        "field is immutable"))
    return causes
