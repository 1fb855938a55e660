"""RBAC policy rules as plain dicts, no I/O: does a rule allow a request (resource or
non-resource), does a set of rules cover another (escalation checks, reconciling defaults),
does a binding's subject name a user, and the compact text upstream prints for a rule.

Used by the authorizer, the escalation check, the default-role reconciler and the reviews;
the semantics are upstream's (k8s.io/kubernetes/pkg/apis/rbac/v1 helpers and
pkg/registry/rbac/validation)."""

from __future__ import annotations

from collections.abc import Iterable

from k3py.server.apiserver.auth import Attributes, User

__all__ = ["rule_allows", "rule_allows_attrs", "subject_matches", "covers", "breakdown",
           "compact", "compact_string", "normalized"]

Rule = dict


def _strs(rule: Rule, key: str) -> list[str]:
    values = rule.get(key)
    return [v for v in values if isinstance(v, str)] if isinstance(values, list) else []


def _has(values: list[str], want: str) -> bool:
    return "*" in values or want in values


def _resource_matches(resources: list[str], plural: str, subresource: str) -> bool:
    what = f"{plural}/{subresource}" if subresource else plural
    return "*" in resources or what in resources or \
        bool(subresource and f"*/{subresource}" in resources)


def rule_allows(rule: Rule, verb: str, group: str, plural: str, name: str | None,
                subresource: str = "") -> bool:
    """A resource rule: verbs, apiGroups, resources ("res/sub", "*/sub", "*") and
    resourceNames (a rule with names never allows a request without a name)."""
    if not _has(_strs(rule, "verbs"), verb) or not _has(_strs(rule, "apiGroups"), group):
        return False
    if not _resource_matches(_strs(rule, "resources"), plural, subresource):
        return False
    names = _strs(rule, "resourceNames")
    return not names or (name is not None and name in names)


def url_matches(urls: list[str], path: str) -> bool:
    """nonResourceURLs: exact, "*", or a trailing "*" as a prefix match ("/apis/*")."""
    for url in urls:
        if url == "*" or url == path or (url.endswith("*") and path.startswith(url[:-1])):
            return True
    return False


def rule_allows_attrs(rule: Rule, attrs: Attributes) -> bool:
    if attrs.path is not None:
        return _has(_strs(rule, "verbs"), attrs.verb) and \
            url_matches(_strs(rule, "nonResourceURLs"), attrs.path)
    return rule_allows(rule, attrs.verb, attrs.group, attrs.plural, attrs.name,
                       attrs.subresource)


def subject_matches(subject: dict, user: User, binding_ns: str | None) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return subject.get("name") == user.name
    if kind == "Group":
        return subject.get("name") in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns or ""
        return user.name == f"system:serviceaccount:{ns}:{subject.get('name')}"
    return False


# ---------------------------------------------------------------- coverage (escalation)

def breakdown(rule: Rule) -> list[Rule]:
    """One rule per (group, resource, verb) or (url, verb), resourceNames kept: the unit
    upstream compares when it asks whether rules cover other rules."""
    out: list[Rule] = []
    verbs = _strs(rule, "verbs")
    names = _strs(rule, "resourceNames")
    for group in _strs(rule, "apiGroups"):
        for resource in _strs(rule, "resources"):
            for verb in verbs:
                one: Rule = {"verbs": [verb], "apiGroups": [group], "resources": [resource]}
                if names:
                    one["resourceNames"] = list(names)
                out.append(one)
    for url in _strs(rule, "nonResourceURLs"):
        for verb in verbs:
            out.append({"verbs": [verb], "nonResourceURLs": [url]})
    return out


def _resource_covers(owner: list[str], wanted: list[str]) -> bool:
    if "*" in owner:
        return True
    for path in wanted:
        if path in owner:
            continue
        if "/" not in path or "*/" + path.split("/", 1)[1] not in owner:
            return False
    return True


def _url_covers(owner: list[str], wanted: list[str]) -> bool:
    return all(url_matches(owner, url) for url in wanted)


def _rule_covers(owner: Rule, sub: Rule) -> bool:
    if not all(_has(_strs(owner, "verbs"), v) for v in _strs(sub, "verbs")):
        return False
    if _strs(sub, "nonResourceURLs"):
        return _url_covers(_strs(owner, "nonResourceURLs"), _strs(sub, "nonResourceURLs"))
    if not all(_has(_strs(owner, "apiGroups"), g) for g in _strs(sub, "apiGroups")):
        return False
    if not _resource_covers(_strs(owner, "resources"), _strs(sub, "resources")):
        return False
    owner_names = _strs(owner, "resourceNames")
    if not owner_names:
        return True
    sub_names = _strs(sub, "resourceNames")
    return bool(sub_names) and all(n in owner_names for n in sub_names)


def covers(owner_rules: Iterable[Rule], rules: Iterable[Rule]) -> list[Rule]:
    """The broken-down parts of `rules` that no rule of `owner_rules` covers ([] = all
    covered)."""
    owners = list(owner_rules)
    return [sub for rule in rules for sub in breakdown(rule)
            if not any(_rule_covers(o, sub) for o in owners)]


def compact(rules: Iterable[Rule]) -> list[Rule]:
    """Merge the verbs of rules that differ only in verbs (one group, one resource, no
    names), as upstream does before it prints missing rules."""
    out: list[Rule] = []
    simple: dict[tuple, Rule] = {}
    for rule in rules:
        groups, resources = _strs(rule, "apiGroups"), _strs(rule, "resources")
        if len(groups) == 1 and len(resources) == 1 and not _strs(rule, "resourceNames") \
                and not _strs(rule, "nonResourceURLs"):
            key = (groups[0], resources[0])
            if key in simple:
                simple[key]["verbs"] += [v for v in _strs(rule, "verbs")
                                         if v not in simple[key]["verbs"]]
                continue
            simple[key] = {"verbs": list(_strs(rule, "verbs")), "apiGroups": groups,
                           "resources": resources}
            out.append(simple[key])
        else:
            out.append(rule)
    return out


def _quoted(values: list[str]) -> str:
    return "[" + " ".join(f'"{v}"' for v in values) + "]"


def compact_string(rule: Rule) -> str:
    """`{APIGroups:[""], Resources:["pods"], Verbs:["get"]}` (upstream's CompactString)."""
    parts = [f"{label}:{_quoted(_strs(rule, key))}" for label, key in (
        ("APIGroups", "apiGroups"), ("Resources", "resources"),
        ("NonResourceURLs", "nonResourceURLs"), ("ResourceNames", "resourceNames"),
        ("Verbs", "verbs")) if _strs(rule, key)]
    return "{" + ", ".join(parts) + "}"


def normalized(rule: Rule) -> Rule:
    """The rule with only its known, non-empty lists (the shape the API stores)."""
    return {k: list(_strs(rule, k)) for k in ("verbs", "apiGroups", "resources",
                                              "resourceNames", "nonResourceURLs")
            if _strs(rule, k)}
