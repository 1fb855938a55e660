"""RBAC over a real Registry and its informers: the default roles created and reconciled
(missing rules and subjects added back, extra ones kept, autoupdate=false left alone), the
aggregation controller (admin/edit/view follow the aggregate-to-* roles, a new labelled role
extends them at once) and the escalation check on role and binding writes."""

from __future__ import annotations

import pytest

from k3py.api import errors
from k3py.server.apiserver.auth import REQUEST_USER, Attributes, User
from k3py.server.bootstrap import authorizer_chain
from k3py.server.rbac.aggregation import AggregationController
from k3py.server.rbac.authorizer import GROUP, RBACAuthorizer
from k3py.server.rbac.defaults import (
    AUTOUPDATE,
    default_cluster_role_bindings,
    default_cluster_roles,
    reconcile_defaults,
)
from k3py.server.rbac.escalation import EscalationCheck
from tests.unit.conftest import eventually

pytestmark = pytest.mark.unit

PODS_GET = {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}


async def test_defaults_created_then_reconciled(env):
    reg = env.registry
    roles, bindings = env.res("clusterroles", GROUP), env.res("clusterrolebindings", GROUP)
    await reconcile_defaults(reg)

    async def names(res) -> set[str]:
        return {o["metadata"]["name"] for o in (await reg.list(res, None))["items"]}
    assert await names(roles) == {r["metadata"]["name"] for r in default_cluster_roles()}
    assert await names(bindings) == {
        b["metadata"]["name"] for b in default_cluster_role_bindings()}

    def strip_rules(obj: dict) -> dict:
        obj["rules"] = [PODS_GET]  # an edit that drops upstream's rules and adds one
        return obj
    await reg.update_with(roles, None, "system:discovery", strip_rules)
    await reg.update_with(bindings, None, "system:discovery",
                          lambda b: {**b, "subjects": []})

    def frozen(obj: dict) -> dict:
        obj["metadata"]["annotations"][AUTOUPDATE] = "false"
        obj["rules"] = []
        return obj
    await reg.update_with(roles, None, "system:monitoring", frozen)
    await reg.delete(roles, None, "system:basic-user", {})

    await reconcile_defaults(reg)
    discovery = await reg.get(roles, None, "system:discovery")
    assert discovery["rules"][0] == PODS_GET
    urls = [u for r in discovery["rules"][1:] for u in r["nonResourceURLs"]]
    assert "/apis/*" in urls and "/version" in urls
    assert [s["name"] for s in (await reg.get(bindings, None, "system:discovery"))[
        "subjects"]] == ["system:authenticated"]
    assert (await reg.get(roles, None, "system:monitoring"))["rules"] == []
    assert await reg.try_get(roles, None, "system:basic-user") is not None


async def test_aggregation_follows_labelled_roles(env):
    await reconcile_defaults(env.registry)
    await env.start(AggregationController)
    informer = env.ctx.informers.informer(GROUP, "clusterroles")

    def rules_of(name: str) -> list[dict]:
        return (informer.get(None, name) or {}).get("rules") or []

    def has(name: str, resource: str) -> bool:
        return any(resource in (r.get("resources") or []) for r in rules_of(name))
    await eventually(lambda: has("view", "pods") and has("edit", "secrets") and
                     has("admin", "rolebindings") and has("admin", "pods"), 10,
                     what="admin/edit/view aggregated")
    assert not has("view", "secrets") and not has("edit", "rolebindings")
    await env.registry.create(env.res("clusterroles", GROUP), None, {
        "metadata": {"name": "widgets-view", "labels": {
            "rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"verbs": ["get"], "apiGroups": ["example.com"], "resources": ["widgets"]}]})
    # view gathers it; edit gathers view (labelled aggregate-to-edit), admin gathers edit
    await eventually(lambda: has("view", "widgets") and has("edit", "widgets") and
                     has("admin", "widgets"), 10, what="widgets aggregated up to admin")


@pytest.fixture
async def rbac(env):
    await reconcile_defaults(env.registry)
    chain = authorizer_chain(env.ctx.informers)
    authz = RBACAuthorizer(env.ctx.informers)
    env.registry.admission.add_validator("RBACEscalation", EscalationCheck(chain, authz))
    reg, roles = env.registry, env.res("roles", GROUP)
    await reg.create(roles, "default", {"metadata": {"name": "manager"}, "rules": [
        PODS_GET, {"verbs": ["create", "update"], "apiGroups": [GROUP],
                   "resources": ["roles", "rolebindings"]}]})
    await reg.create(env.res("rolebindings", GROUP), "default", {
        "metadata": {"name": "bob-manager"},
        "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "manager"},
        "subjects": [{"kind": "User", "name": "bob"}]})
    await env.ctx.informers.wait_synced()
    # what bob-manager grants, not just any rule (system:authenticated's default cluster
    # bindings give bob rules before the new Role and binding are cached)
    await eventually(lambda: authz.allows(Attributes(BOB, "get", "", "pods", "default"))
                     and authz.allows(Attributes(BOB, "create", GROUP, "roles", "default")),
                     what="bob's binding cached")
    return env


BOB = User("bob", ("dev", "system:authenticated"))


def _role(name: str, *rules: dict) -> dict:
    return {"metadata": {"name": name}, "rules": list(rules)}


def _binding(name: str, kind: str, role: str) -> dict:
    return {"metadata": {"name": name}, "subjects": [{"kind": "User", "name": "alice"}],
            "roleRef": {"apiGroup": GROUP, "kind": kind, "name": role}}


async def test_escalation_refused_unless_held_or_allowed(rbac):
    reg, roles, bindings = rbac.registry, rbac.res("roles", GROUP), rbac.res("rolebindings",
                                                                               GROUP)
    token = REQUEST_USER.set(BOB)
    try:
        await reg.create(roles, "default", _role("reader", PODS_GET))
        with pytest.raises(errors.StatusError) as e:
            await reg.create(roles, "default", _role("thief", PODS_GET, {
                "verbs": ["get", "list"], "apiGroups": [""], "resources": ["secrets"]}))
        assert e.value.code == 403 and e.value.message == (
            'roles.rbac.authorization.k8s.io "thief" is forbidden: user "bob" (groups=["dev" '
            '"system:authenticated"]) is attempting to grant RBAC permissions not currently '
            'held:\n{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}')
        await reg.create(bindings, "default", _binding("ok", "Role", "reader"))
        with pytest.raises(errors.StatusError) as e:
            await reg.create(bindings, "default", _binding("too-much", "ClusterRole",
                                                             "system:aggregate-to-edit"))
        assert e.value.code == 403 and "not currently held" in e.value.message
        with pytest.raises(errors.StatusError) as e:
            await reg.create(rbac.res("clusterroles", GROUP), None, {
                "metadata": {"name": "agg"}, "rules": [],
                "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"a": "b"}}]}})
        assert e.value.code == 403 and "aggregationRule" in e.value.message
    finally:
        REQUEST_USER.reset(token)
    # with `escalate` on roles and `bind` on the edit ClusterRole, both go through
    await reg.create(roles, "default", _role("more", {"verbs": ["escalate"], "apiGroups": [
        GROUP], "resources": ["roles"]}, {"verbs": ["bind"], "apiGroups": [GROUP],
                                          "resources": ["clusterroles"],
                                          "resourceNames": ["edit"]}))
    await reg.create(bindings, "default", {**_binding("bob-more", "Role", "more"), "subjects": [
        {"kind": "User", "name": "bob"}]})
    authz = RBACAuthorizer(rbac.ctx.informers)
    await eventually(lambda: authz.allows(Attributes(BOB, "escalate", GROUP, "roles", "default"))
                     and authz.allows(Attributes(BOB, "bind", GROUP, "clusterroles", "default",
                                                 "edit")), what="bob-more cached")
    token = REQUEST_USER.set(BOB)
    try:
        await reg.create(roles, "default", _role("thief", {"verbs": ["get"], "apiGroups": [""],
                                                           "resources": ["secrets"]}))
        await reg.create(bindings, "default", _binding("edit", "ClusterRole", "edit"))
    finally:
        REQUEST_USER.reset(token)
