"""RBAC's pure parts: non-resource rules, coverage of rules by rules (the escalation check's
arithmetic) and upstream's compact text, aggregation's union, and impersonation through a real
AuthorizerChain (what each part of an Impersonate-* request is checked as)."""

from __future__ import annotations

import pytest

from k3py.api import errors
from k3py.server.apiserver.auth import Attributes, AuthorizerChain, User
from k3py.server.apiserver.impersonation import impersonate
from k3py.server.rbac.aggregation import aggregated_rules
from k3py.server.rbac.rules import compact, compact_string, covers, rule_allows_attrs

pytestmark = pytest.mark.unit

BOB = User("bob", ("dev", "system:authenticated"))


def _path(verb: str, path: str) -> Attributes:
    return Attributes(BOB, verb, "", "", None, path=path)


def test_non_resource_urls_exact_and_prefix():
    rule = {"verbs": ["get"], "nonResourceURLs": ["/api", "/apis/*", "/version"]}
    assert rule_allows_attrs(rule, _path("get", "/api"))
    assert rule_allows_attrs(rule, _path("get", "/apis/apps/v1"))
    assert not rule_allows_attrs(rule, _path("get", "/apis"))
    assert not rule_allows_attrs(rule, _path("post", "/api"))
    assert not rule_allows_attrs(rule, _path("get", "/metrics"))
    # a resource rule never allows a path, a URL rule never a resource
    assert not rule_allows_attrs({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                                 _path("get", "/api"))
    assert not rule_allows_attrs(rule, Attributes(BOB, "get", "", "pods", "default"))


def test_covers_reports_what_is_missing_broken_down():
    owner = [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "*/log"]},
             {"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"],
              "resourceNames": ["web"]},
             {"verbs": ["get"], "nonResourceURLs": ["/healthz/*"]}]
    assert covers(owner, [{"verbs": ["get"], "apiGroups": [""],
                           "resources": ["pods", "pods/log"]}]) == []
    assert covers(owner, [{"verbs": ["get"], "nonResourceURLs": ["/healthz/etcd"]}]) == []
    assert covers(owner, [{"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"],
                           "resourceNames": ["web"]}]) == []
    missing = covers(owner, [
        {"verbs": ["get", "delete"], "apiGroups": [""], "resources": ["pods", "secrets"]},
        {"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"]}])
    assert missing == [
        {"verbs": ["delete"], "apiGroups": [""], "resources": ["pods"]},
        {"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]},
        {"verbs": ["delete"], "apiGroups": [""], "resources": ["secrets"]},
        {"verbs": ["get"], "apiGroups": ["apps"], "resources": ["deployments"]}]
    assert [compact_string(r) for r in compact(missing)] == [
        '{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}',
        '{APIGroups:[""], Resources:["secrets"], Verbs:["get" "delete"]}',
        '{APIGroups:["apps"], Resources:["deployments"], Verbs:["get"]}']
    assert covers([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                  [{"verbs": ["get"], "nonResourceURLs": ["/metrics"]}]) == \
        [{"verbs": ["get"], "nonResourceURLs": ["/metrics"]}]


def _role(name: str, labels: dict, rules: list, selectors: list | None = None) -> dict:
    role = {"metadata": {"name": name, "labels": labels}, "rules": rules}
    if selectors is not None:
        role["aggregationRule"] = {"clusterRoleSelectors": selectors}
    return role


def test_aggregated_rules_union_in_name_order_without_duplicates():
    r1 = {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}
    r2 = {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}
    view = _role("view", {}, [], [{"matchLabels": {"agg": "view"}}])
    roles = [view, _role("z", {"agg": "view"}, [r2, r1]), _role("a", {"agg": "view"}, [r1]),
             _role("other", {"agg": "edit"}, [{"verbs": ["*"]}])]
    assert aggregated_rules(view, roles) == [r1, r2]
    assert aggregated_rules(_role("x", {}, [], []), roles) == []


def _chain_allowing(*allowed: tuple[str, str, str | None]) -> AuthorizerChain:
    """A real chain whose one extra authorizer allows (plural, name, subresource) triples."""
    chain = AuthorizerChain()
    chain.add("Test", lambda a: a.verb == "impersonate" and
              (a.plural, a.name, a.subresource or None) in allowed)
    return chain


def test_impersonation_checks_each_part_and_adds_implied_groups():
    alice = User("alice", ("system:authenticated",))
    chain = _chain_allowing(("users", "bob", None), ("groups", "dev", None),
                            ("uids", "1234", None), ("userextras", "x", "scopes"),
                            ("serviceaccounts", "ci", None))
    assert impersonate({}, alice, chain) is alice
    user = impersonate({"Impersonate-User": "bob", "Impersonate-Group": "dev",
                        "Impersonate-Uid": "1234", "Impersonate-Extra-Scopes": "x"},
                       alice, chain)
    assert user == User("bob", ("dev", "system:authenticated"), "1234",
                        (("scopes", ("x",)),))
    sa = impersonate({"Impersonate-User": "system:serviceaccount:ns:ci"}, alice, chain)
    assert sa.groups == ("system:serviceaccounts", "system:serviceaccounts:ns",
                         "system:authenticated")
    with pytest.raises(errors.StatusError) as e:
        impersonate({"Impersonate-User": "root"}, alice, chain)
    assert e.value.code == 403 and e.value.message == (
        'users "root" is forbidden: User "alice" cannot impersonate resource "users" in API '
        'group "" at the cluster scope')
    with pytest.raises(errors.StatusError) as e:
        impersonate({"Impersonate-User": "bob", "Impersonate-Group": "system:masters"},
                    alice, chain)
    assert e.value.code == 403
    with pytest.raises(errors.StatusError) as e:
        impersonate({"Impersonate-Group": "dev"}, alice, chain)
    assert e.value.code == 400
    # admins may impersonate anyone (SystemMasters allows every verb)
    admin = User("system:admin", ("system:masters", "system:authenticated"))
    assert impersonate({"Impersonate-User": "system:anonymous"}, admin, AuthorizerChain()) == \
        User("system:anonymous", ("system:unauthenticated",))
