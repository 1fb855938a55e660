"""Label selectors (string and structured forms) and field selectors, as upstream parses them.

Used by list/watch filtering, controllers (owner selectors) and the scheduler; no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from k3py.api import errors

__all__ = ["LabelSelector", "Requirement", "parse_label_selector", "label_selector_from_struct",
           "selector_to_string", "FieldSelector", "parse_field_selector"]


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        v = labels.get(self.key)
        if self.op in ("=", "in"):
            return has and v in self.values
        if self.op in ("!=", "notin"):
            return not has or v not in self.values
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("gt", "lt"):
            try:
                n, bound = int(v or ""), int(self.values[0])
            except ValueError:
                return False
            return n > bound if self.op == "gt" else n < bound
        return False


class LabelSelector:
    def __init__(self, requirements: list[Requirement], match_nothing: bool = False) -> None:
        self.requirements = requirements
        self.match_nothing = match_nothing

    @property
    def empty(self) -> bool:
        return not self.requirements and not self.match_nothing

    def matches(self, labels: dict[str, str] | None) -> bool:
        if self.match_nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def __bool__(self) -> bool:
        return True


_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                  r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_TOKEN = re.compile(r"\s*(!=|==|=|!|\(|\)|,|[^\s!=(),]+)")


def _check_key(key: str, whole: str) -> None:
    if not key or not _KEY.match(key) or len(key.split("/")[-1]) > 63:
        raise errors.bad_request(
            f'unable to parse requirement: invalid label key "{key}": name part must consist '
            f"of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            f"alphanumeric character")


def _check_value(value: str) -> None:
    if len(value) > 63 or not _VALUE.match(value):
        raise errors.bad_request(
            f'unable to parse requirement: invalid label value: "{value}": a valid label must '
            f"be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
            f"must start and end with an alphanumeric character")


def parse_label_selector(s: str) -> LabelSelector:
    tokens = [t for t in _TOKEN.findall(s or "")]
    reqs: list[Requirement] = []
    i = 0

    def fail(msg: str) -> errors.StatusError:
        return errors.bad_request(f"unable to parse requirement: {msg}")

    while i < len(tokens):
        tok = tokens[i]
        if tok == "!":
            if i + 1 >= len(tokens):
                raise fail("found '', expected: identifier after '!'")
            key = tokens[i + 1]
            _check_key(key, s)
            reqs.append(Requirement(key, "!"))
            i += 2
        else:
            key = tok
            if key in ("(", ")", ",", "=", "==", "!="):
                raise fail(f"found '{key}', expected: !, identifier, or 'end of string'")
            _check_key(key, s)
            i += 1
            if i >= len(tokens) or tokens[i] == ",":
                reqs.append(Requirement(key, "exists"))
            else:
                op = tokens[i]
                if op in ("=", "==", "!="):
                    i += 1
                    value = ""
                    if i < len(tokens) and tokens[i] not in (",",):
                        value = tokens[i]
                        i += 1
                    _check_value(value)
                    reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
                elif op in ("in", "notin"):
                    i += 1
                    if i >= len(tokens) or tokens[i] != "(":
                        raise fail(f"found '{tokens[i] if i < len(tokens) else ''}', "
                                   f"expected: '('")
                    i += 1
                    values: list[str] = []
                    while True:
                        if i >= len(tokens):
                            raise fail("found '', expected: ',', ')' or identifier")
                        t = tokens[i]
                        if t == ")":
                            i += 1
                            break
                        if t == ",":
                            i += 1
                            continue
                        _check_value(t)
                        values.append(t)
                        i += 1
                    if op == "in" and not values:
                        raise fail("for 'in', 'notin' operators, values set can't be empty")
                    reqs.append(Requirement(key, op, tuple(values)))
                elif op in ("gt", "lt"):
                    i += 1
                    reqs.append(Requirement(key, op, (tokens[i] if i < len(tokens) else "",)))
                    i += 1
                else:
                    raise fail(f"found '{op}', expected: in, notin, =, ==, !=, gt, lt")
        if i < len(tokens):
            if tokens[i] != ",":
                raise fail(f"found '{tokens[i]}', expected: ',' or 'end of string'")
            i += 1
            if i >= len(tokens):
                raise fail("found '', expected: identifier")
    return LabelSelector(reqs)


_STRUCT_OPS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!",
               "Gt": "gt", "Lt": "lt"}


def label_selector_from_struct(sel: dict[str, Any] | None) -> LabelSelector:
    """metav1.LabelSelector. None matches nothing (as upstream); {} matches everything."""
    if sel is None:
        return LabelSelector([], match_nothing=True)
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (sel.get("matchLabels") or {}).items()]
    for e in sel.get("matchExpressions") or []:
        op = _STRUCT_OPS.get(e.get("operator", ""))
        if op is None:
            raise errors.bad_request(f'"{e.get("operator")}" is not a valid label selector '
                                     f"operator")
        reqs.append(Requirement(e.get("key", ""), op, tuple(e.get("values") or ())))
    return LabelSelector(reqs)


def selector_to_string(sel: dict[str, Any] | None) -> str:
    if not sel:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        op, key, values = e.get("operator"), e.get("key"), e.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


# ------------------------------------------------------------------ field selectors

_COMMON_FIELDS = ("metadata.name", "metadata.namespace")
_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                  "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
                  "status.podIPs", "status.nominatedNodeName"),
    ("", "Event"): ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                    "involvedObject.uid", "involvedObject.apiVersion",
                    "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
                    "reportingComponent", "source", "type"),
    ("events.k8s.io", "Event"): ("regarding.kind", "regarding.namespace", "regarding.name",
                                 "regarding.uid", "reason", "type", "reportingController"),
    ("", "Secret"): ("type",),
    ("", "Node"): ("spec.unschedulable",),
    ("", "Namespace"): ("status.phase",),
    ("", "ReplicationController"): ("status.replicas",),
    ("apps", "ReplicaSet"): ("status.replicas",),
    ("batch", "Job"): ("status.successful",),
    ("certificates.k8s.io", "CertificateSigningRequest"): ("spec.signerName",),
}


def _field_value(obj: dict, path: str) -> str:
    if path == "source":
        return str(((obj.get("source") or {}).get("component")) or "")
    if path == "status.successful":
        path = "status.succeeded"
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...]  # (field, equal?, value)

    def matches(self, obj: dict) -> bool:
        for field, equal, value in self.terms:
            if (_field_value(obj, field) == value) != equal:
                return False
        return True

    def value_of(self, field: str) -> str | None:
        for f, equal, value in self.terms:
            if f == field and equal:
                return value
        return None


def parse_field_selector(s: str, res: Any = None) -> FieldSelector:
    terms = []
    allowed = None
    if res is not None and not getattr(res, "crd", False):
        allowed = _COMMON_FIELDS + _FIELDS.get((res.group, res.kind), ())
    for part in (s or "").split(","):
        part = part.strip()
        if not part:
            continue
        m = re.match(r"^([^=!]+?)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise errors.bad_request(f'invalid selector: \'{s}\'; can\'t understand \'{part}\'')
        field, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        if allowed is not None and field not in allowed:
            if (res.group, res.kind) in _FIELDS:
                raise errors.bad_request(f"field label not supported: {field}")
            raise errors.bad_request(f'"{field}" is not a known field selector: only '
                                     f'"metadata.name", "metadata.namespace"')
        terms.append((field, op != "!=", value))
    return FieldSelector(tuple(terms))
