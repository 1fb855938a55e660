"""Name, label and annotation validators with upstream's exact messages; no I/O.

Used by k3py.api.kinds validation and by CRD validation."""

from __future__ import annotations

import re

from k3py.api.errors import Cause, field_cause

__all__ = ["dns1123_subdomain", "dns1123_label", "dns1035_label", "label_key", "label_value",
           "required", "invalid_value", "not_supported", "duplicate", "check_labels",
           "check_annotations", "check_object_meta", "fmt_value"]

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


def fmt_value(v: object) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, dict):
        inner = ", ".join(f'"{k}":"{val}"' for k, val in sorted(v.items()))
        return "map[string]string{" + inner + "}"
    return str(v)


def required(field: str, detail: str = "") -> Cause:
    return field_cause(field, "Required value" + (f": {detail}" if detail else ""),
                       "FieldValueRequired")


def invalid_value(field: str, value: object, detail: str) -> Cause:
    return field_cause(field, f"Invalid value: {fmt_value(value)}: {detail}", "FieldValueInvalid")


def not_supported(field: str, value: object, supported: list[str]) -> Cause:
    sv = ", ".join(f'"{s}"' for s in supported)
    return field_cause(field, f"Unsupported value: {fmt_value(value)}: supported values: {sv}",
                       "FieldValueNotSupported")


def duplicate(field: str, value: object) -> Cause:
    return field_cause(field, f"Duplicate value: {fmt_value(value)}", "FieldValueDuplicate")


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


def label_key(key: str) -> list[str]:
    prefix, _, name = key.rpartition("/")
    out = []
    if prefix and dns1123_subdomain(prefix):
        out.append("prefix part " + SUBDOMAIN_MSG)
    if not name or len(name) > 63 or not _QNAME.match(name):
        out.append("name part must consist of alphanumeric characters, '-', '_' or '.', and "
                   "must start and end with an alphanumeric character (e.g. 'MyName',  or "
                   "'my.name',  or '123-abc', regex used for validation is "
                   "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
    return out


def label_value(value: str) -> list[str]:
    if not isinstance(value, str):
        return ["must be a string"]
    out = []
    if len(value) > 63:
        out.append("must be no more than 63 characters")
    if not _LVALUE.match(value):
        out.append("a valid label must be an empty string or consist of alphanumeric "
                   "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                   "character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for "
                   "validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
    return out


def check_labels(labels: object, field: str) -> list[Cause]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [invalid_value(field, labels, "must be a map of strings")]
    causes = []
    for k, v in labels.items():
        for msg in label_key(k):
            causes.append(invalid_value(field, k, msg))
        for msg in label_value(v):
            causes.append(invalid_value(f"{field}", v, msg))
    return causes


def check_annotations(ann: object, field: str) -> list[Cause]:
    if ann is None:
        return []
    if not isinstance(ann, dict):
        return [invalid_value(field, ann, "must be a map of strings")]
    causes = []
    total = 0
    for k, v in ann.items():
        for msg in label_key(k):
            causes.append(invalid_value(field, k, msg))
        if not isinstance(v, str):
            causes.append(invalid_value(f"{field}[{k}]", v, "must be a string"))
        else:
            total += len(k) + len(v)
    if total > 256 * 1024:
        causes.append(field_cause(field, "Too long: may not be more than 262144 bytes",
                                  "FieldValueTooLong"))
    return causes


def check_object_meta(md: dict, name_check=dns1123_subdomain) -> list[Cause]:
    causes = []
    name = md.get("name") or ""
    if not name:
        causes.append(required("metadata.name", "name or generateName is required"))
    else:
        for msg in name_check(name):
            causes.append(invalid_value("metadata.name", name, msg))
    causes += check_labels(md.get("labels"), "metadata.labels")
    causes += check_annotations(md.get("annotations"), "metadata.annotations")
    return causes
