"""Label selectors (string and structured forms) and field selectors, as upstream parses them.

Used by list/watch filtering, controllers (owner selectors) and the scheduler; no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from k3py.api import errors
from k3py.api.resources import Resource
from k3py.api.validation import label_key, label_value

__all__ = ["LabelSelector", "Requirement", "parse_label_selector", "label_selector_from_struct",
           "selector_to_string", "FieldSelector", "parse_field_selector", "field_value",
           "SelectorError"]


class SelectorError(ValueError):
    """A selector that does not parse; `errors.bad_request(str(e))` is what the API returns."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "==", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        v = labels.get(self.key)
        if self.op in ("=", "==", "in"):
            return has and v in self.values
        if self.op in ("!=", "notin"):
            return not has or v not in self.values
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("gt", "lt") and has:
            try:
                n, bound = int(v or ""), int(self.values[0])
            except (ValueError, IndexError):
                return False
            return n > bound if self.op == "gt" else n < bound
        return False

    def __str__(self) -> str:
        if self.op == "!":
            return "!" + self.key
        if self.op == "exists":
            return self.key
        if self.op in ("in", "notin"):
            return f"{self.key} {self.op} ({','.join(sorted(self.values))})"
        sym = {"gt": ">", "lt": "<"}.get(self.op, self.op)
        return f"{self.key}{sym}{self.values[0] if self.values else ''}"


class LabelSelector:
    """A conjunction of requirements; `match_nothing` is upstream's labels.Nothing()."""

    def __init__(self, requirements: list[Requirement], match_nothing: bool = False) -> None:
        self.requirements = sorted(requirements, key=lambda r: r.key)
        self.match_nothing = match_nothing

    @property
    def empty(self) -> bool:
        return not self.requirements and not self.match_nothing

    def matches(self, labels: dict[str, str] | None) -> bool:
        if self.match_nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __bool__(self) -> bool:
        return True


# ------------------------------------------------------------------ string form (labels.Parse)

_SPECIAL = set("=!(),><")
_OPERATORS = {"!": "!", "!=": "!=", "(": "(", ")": ")", ",": ",", "=": "=", "==": "==",
              ">": "gt", "<": "lt"}
_ALL_OPS = "in, notin, =, ==, !=, gt, lt"
_EOS = ("eos", "")


def _lex(s: str) -> list[tuple[str, str]]:
    """Tokens as (type, literal); type is "id", "eos" or the operator itself."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        if ch.isspace():
            i += 1
            continue
        if ch in _SPECIAL:
            buf = ch
            i += 1
            while i < n and s[i] in _SPECIAL and (buf + s[i]) in _OPERATORS:
                buf += s[i]
                i += 1
            out.append((_OPERATORS.get(buf, "error"), buf))
            continue
        j = i
        while j < n and not s[j].isspace() and s[j] not in _SPECIAL:
            j += 1
        word = s[i:j]
        out.append((word if word in ("in", "notin") else "id", word))
        i = j
    out.append(_EOS)
    return out


class _Parser:
    def __init__(self, s: str) -> None:
        self.toks = _lex(s)
        self.pos = 0

    def peek(self, values: bool = True) -> tuple[str, str]:
        t, lit = self.toks[self.pos]
        if values and t in ("in", "notin"):
            t = "id"
        return t, lit

    def take(self, values: bool = True) -> tuple[str, str]:
        tok = self.peek(values)
        if self.pos < len(self.toks) - 1:
            self.pos += 1
        return tok

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            t, lit = self.peek()
            if t in ("id", "!"):
                try:
                    reqs.append(self.requirement())
                except SelectorError as e:
                    raise SelectorError(f"unable to parse requirement: {e}") from None
                t, lit = self.take()
                if t == "eos":
                    return reqs
                if t == ",":
                    t2, l2 = self.peek()
                    if t2 not in ("id", "!"):
                        raise SelectorError(f"found '{l2}', expected: identifier after ','")
                    continue
                raise SelectorError(f"found '{lit}', expected: ',' or 'end of string'")
            if t == "eos":
                return reqs
            raise SelectorError(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def requirement(self) -> Requirement:
        op = ""
        t, lit = self.take()
        if t == "!":
            op = "!"
            t, lit = self.take()
        if t != "id":
            raise SelectorError(f"found '{lit}', expected: identifier")
        key = lit
        nt, _ = self.peek()
        if nt in ("eos", ","):
            return _new_requirement(key, op or "exists", ())
        if op == "!":
            return _new_requirement(key, op, ())
        t, lit = self.take(values=False)
        if t not in ("in", "notin", "=", "==", "!=", "gt", "lt"):
            raise SelectorError(f"found '{lit}', expected: {_ALL_OPS}")
        if t in ("in", "notin"):
            return _new_requirement(key, t, self.value_set())
        nt, nlit = self.peek()
        if nt in ("eos", ","):
            return _new_requirement(key, t, ("",))
        nt, nlit = self.take()
        if nt != "id":
            raise SelectorError(f"found '{nlit}', expected: identifier")
        return _new_requirement(key, t, (nlit,))

    def value_set(self) -> tuple[str, ...]:
        t, lit = self.take()
        if t != "(":
            raise SelectorError(f"found '{lit}' expected: '('")
        t, lit = self.peek()
        if t == ")":
            self.take()
            return ("",)
        if t not in ("id", ","):
            raise SelectorError(f"found '{lit}', expected: ',', ')' or identifier")
        values: set[str] = set()
        while True:
            t, lit = self.take()
            if t == "id":
                values.add(lit)
                t2, l2 = self.peek()
                if t2 == ",":
                    continue
                if t2 == ")":
                    break
                raise SelectorError(f"found '{l2}', expected: ',' or ')'")
            elif t == ",":
                if not values:
                    values.add("")
                t2, _ = self.peek()
                if t2 == ")":
                    values.add("")
                    break
                if t2 == ",":
                    self.take()
                    values.add("")
            else:
                raise SelectorError(f"found '{lit}', expected: ',', or identifier")
        t, lit = self.take()
        if t != ")":
            raise SelectorError(f"found '{lit}', expected: ')'")
        return tuple(sorted(values))


def _field_err(path: str, value: object, detail: str) -> str:
    shown = f'"{value}"' if isinstance(value, str) else \
        "[]string{" + ", ".join(f'"{v}"' for v in value) + "}"  # type: ignore[union-attr]
    return f"{path}: Invalid value: {shown}: {detail}"


def _new_requirement(key: str, op: str, values: tuple[str, ...],
                     path: str = "") -> Requirement:
    """labels.NewRequirement: key, operator arity and value checks with upstream's messages."""
    errs: list[str] = []
    prefix = f"{path}." if path else ""
    kerrs = label_key(key)
    if kerrs:
        errs.append(_field_err(prefix + "key", key, "; ".join(kerrs)))
    vpath = prefix + "values"
    if op in ("in", "notin") and not values:
        errs.append(_field_err(vpath, values, "for 'in', 'notin' operators, values set can't "
                                              "be empty"))
    elif op in ("=", "==", "!=") and len(values) != 1:
        errs.append(_field_err(vpath, values, "exact-match compatible operators require a "
                                              "single value"))
    elif op in ("exists", "!") and values:
        errs.append(_field_err(vpath, values, "values set must be empty for exists and does "
                                              "not exist"))
    elif op in ("gt", "lt"):
        if len(values) != 1:
            errs.append(_field_err(vpath, values, "for 'Gt', 'Lt' operators, exactly one value "
                                                  "is required"))
        else:
            try:
                int(values[0])
            except ValueError:
                errs.append(_field_err(f"{vpath}[0]", values[0], "for 'Gt', 'Lt' operators, "
                                       "the value must be an integer"))
    for i, v in enumerate(values):
        verrs = label_value(v)
        if verrs:
            errs.append(_field_err(f"{vpath}[{i}][{key}]", v, "; ".join(verrs)))
    if errs:
        raise SelectorError(errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]")
    return Requirement(key, op, tuple(values))


def parse_label_selector(s: str) -> LabelSelector:
    """labels.Parse; a bad selector is a 400 BadRequest carrying upstream's message."""
    try:
        return LabelSelector(_Parser(s or "").parse())
    except SelectorError as e:
        raise errors.bad_request(str(e)) from None


# ------------------------------------------------------------------ structured form

_STRUCT_OPS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}


def label_selector_from_struct(sel: dict[str, Any] | None) -> LabelSelector:
    """metav1.LabelSelectorAsSelector. None matches nothing; {} matches everything.

    Raises SelectorError (a ValueError) so validation can report it as a field error."""
    if sel is None:
        return LabelSelector([], match_nothing=True)
    reqs = []
    for k, v in (sel.get("matchLabels") or {}).items():
        reqs.append(_new_requirement(k, "=", (str(v),)))
    for e in sel.get("matchExpressions") or []:
        op = _STRUCT_OPS.get((e or {}).get("operator", ""))
        if op is None:
            raise SelectorError(f'"{(e or {}).get("operator", "")}" is not a valid label '
                                f"selector operator")
        reqs.append(_new_requirement(e.get("key", ""), op, tuple(e.get("values") or ())))
    return LabelSelector(reqs)


def selector_to_string(sel: dict[str, Any] | None) -> str:
    """The string form of a structured selector (sorted by key, as upstream prints it)."""
    if not sel:
        return ""
    try:
        return str(label_selector_from_struct(sel))
    except SelectorError:
        return "<error>"


# ------------------------------------------------------------------ field selectors

_META = ("metadata.name", "metadata.namespace")
# Field labels each built-in kind's conversion accepts (pkg/apis/*/v1/conversion.go).
_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): _META + ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                          "spec.serviceAccountName", "spec.hostNetwork", "status.phase",
                          "status.podIP", "status.podIPs", "status.nominatedNodeName"),
    ("", "Event"): _META + ("involvedObject.kind", "involvedObject.namespace",
                            "involvedObject.name", "involvedObject.uid",
                            "involvedObject.apiVersion", "involvedObject.resourceVersion",
                            "involvedObject.fieldPath", "reason", "reportingComponent", "source",
                            "type"),
    ("events.k8s.io", "Event"): _META + ("regarding.kind", "regarding.namespace",
                                         "regarding.name", "regarding.uid",
                                         "regarding.apiVersion", "regarding.resourceVersion",
                                         "regarding.fieldPath", "reason", "reportingController",
                                         "type"),
    ("", "Secret"): _META + ("type",),
    ("", "Node"): ("metadata.name", "spec.unschedulable"),
    ("", "Namespace"): ("metadata.name", "status.phase"),
    ("", "ReplicationController"): _META + ("status.replicas",),
    ("apps", "ReplicaSet"): _META + ("status.replicas",),
    ("batch", "Job"): _META + ("status.successful",),
    ("certificates.k8s.io", "CertificateSigningRequest"): ("metadata.name", "spec.signerName"),
}
_BOOL_FIELDS = {"spec.hostNetwork", "spec.unschedulable"}
_INT_FIELDS = {"status.replicas", "status.successful"}


def field_value(obj: dict, path: str) -> str:
    """The string a field label selects on (absent booleans are "false", counts "0")."""
    if path == "source":
        return str(((obj.get("source") or {}).get("component")) or "")
    if path == "status.successful":
        path = "status.succeeded"
    if path == "status.podIP":
        ips = (obj.get("status") or {}).get("podIPs") or []
        if ips and isinstance(ips[0], dict) and ips[0].get("ip"):
            return str(ips[0]["ip"])
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if cur is None:
        if path in _BOOL_FIELDS:
            return "false"
        return "0" if path in _INT_FIELDS or path == "status.succeeded" else ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, list):
        return ",".join(str(x.get("ip", x)) if isinstance(x, dict) else str(x) for x in cur)
    return str(cur)


def custom_field_value(obj: dict, path: str) -> str:
    """The string a custom resource's field selects on, as upstream formats its selectable
    field's value: "" when absent, true/false, a whole number without a decimal point."""
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, float) and cur.is_integer():
        return str(int(cur))
    return str(cur)


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...]  # (field, equal?, value)
    custom: bool = False  # of a custom resource: values as custom_field_value reads them

    @property
    def empty(self) -> bool:
        return not self.terms

    def matches(self, obj: dict) -> bool:
        value_of = custom_field_value if self.custom else field_value
        return all((value_of(obj, f) == value) == equal for f, equal, value in self.terms)

    def value_of(self, field: str) -> str | None:
        for f, equal, value in self.terms:
            if f == field and equal:
                return value
        return None

    def __str__(self) -> str:
        return ",".join(f"{f}{'=' if eq else '!='}{v}" for f, eq, v in self.terms)


def _split_terms(s: str) -> list[str]:
    parts, buf, i = [], [], 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            buf.append(s[i:i + 2])
            i += 2
            continue
        if ch == ",":
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    parts.append("".join(buf))
    return parts


def _unescape(v: str) -> str:
    out, i = [], 0
    while i < len(v):
        if v[i] == "\\" and i + 1 < len(v):
            out.append(v[i + 1])
            i += 2
        else:
            out.append(v[i])
            i += 1
    return "".join(out)


def _allowed_fields(res: Resource | None) -> tuple[tuple[str, ...], bool] | None:
    """(allowed labels, kind-specific?) or None when anything goes (no resource given). A
    custom resource allows metadata.name, metadata.namespace when namespaced and its served
    version's selectable fields, as upstream's custom resource field label conversion."""
    if res is None:
        return None
    if res.crd:
        meta = _META if res.namespaced else _META[:1]
        return meta + tuple(res.extra.get("selectable_fields") or ()), True
    key = (res.group, res.kind)
    if key in _FIELDS:
        return _FIELDS[key], True
    return _META, False


def parse_field_selector(s: str, res: Resource | None = None) -> FieldSelector:
    """fields.ParseSelector plus the kind's field label conversion (400 on an unknown label)."""
    terms = []
    allowed = _allowed_fields(res)
    for part in _split_terms(s or ""):
        if not part:
            continue
        split = None
        for i in range(len(part)):
            for op in ("!=", "==", "="):
                if part.startswith(op, i):
                    split = (part[:i], op, part[i + len(op):])
                    break
            if split:
                break
        if split is None:
            raise errors.bad_request(f"invalid selector: '{s}'; can't understand '{part}'")
        field, op, value = split
        if allowed is not None and field not in allowed[0]:
            if allowed[1]:
                raise errors.bad_request(f"field label not supported: {field}")
            raise errors.bad_request(f'"{field}" is not a known field selector: only '
                                     f'"metadata.name", "metadata.namespace"')
        terms.append((field, op != "!=", _unescape(value)))
    return FieldSelector(tuple(terms), custom=res is not None and res.crd)
