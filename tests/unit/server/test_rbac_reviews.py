"""The review handlers over a real Registry, its informers and the server's chain: access
reviews answer from the chain for the requester or the named subject, rules reviews list the
bound rules, SelfSubjectReview echoes the user; malformed specs get upstream's 422/400."""

from __future__ import annotations

import pytest

from k3py.api import errors
from k3py.server.apiserver.auth import User
from k3py.server.bootstrap import authorizer_chain
from k3py.server.rbac.authorizer import GROUP, RBACAuthorizer
from k3py.server.rbac.defaults import reconcile_defaults
from k3py.server.rbac.reviews import Reviews
from tests.unit.conftest import eventually

pytestmark = pytest.mark.unit

CAROL = User("carol", ("system:authenticated",), "u-1", (("team", ("a", "b")),))
ADMIN = User("system:admin", ("system:masters", "system:authenticated"))
NODE = User("system:node:n1", ("system:nodes", "system:authenticated"))


@pytest.fixture
async def reviews(env):
    await reconcile_defaults(env.registry)
    await env.registry.create(env.res("roles", GROUP), "default", {
        "metadata": {"name": "cm-reader"},
        "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"],
                   "resourceNames": ["settings"]}]})
    await env.registry.create(env.res("rolebindings", GROUP), "default", {
        "metadata": {"name": "carol"}, "subjects": [{"kind": "User", "name": "carol"}],
        "roleRef": {"apiGroup": GROUP, "kind": "Role", "name": "cm-reader"}})
    rbac = RBACAuthorizer(env.ctx.informers)
    await env.ctx.informers.wait_synced()
    await eventually(lambda: rbac.rules_for(CAROL, "default"), what="carol's binding")
    table: dict = {}
    Reviews(authorizer_chain(env.ctx.informers), rbac).install(table)
    return table


def _attrs(**kw) -> dict:
    return {"spec": {"resourceAttributes": {"verb": "get", "resource": "configmaps",
                                            "namespace": "default", **kw}}}


async def test_access_reviews(reviews):
    ssar = reviews[("authorization.k8s.io", "selfsubjectaccessreviews")]
    out = await ssar(_attrs(name="settings"), CAROL, None)
    assert out["status"] == {"allowed": True} and out["kind"] == "SelfSubjectAccessReview"
    assert (await ssar(_attrs(name="other"), CAROL, None))["status"]["allowed"] is False
    assert (await ssar(_attrs(), CAROL, None))["status"]["allowed"] is False
    assert (await ssar({"spec": {"nonResourceAttributes": {"verb": "get", "path": "/apis/x"}}},
                       CAROL, None))["status"]["allowed"] is True
    sar = reviews[("authorization.k8s.io", "subjectaccessreviews")]
    out = await sar({"spec": {**_attrs(name="settings")["spec"], "user": "carol"}}, ADMIN, None)
    assert out["status"]["allowed"] is True
    lsar = reviews[("authorization.k8s.io", "localsubjectaccessreviews")]
    with pytest.raises(errors.StatusError) as e:
        await lsar({"spec": {**_attrs()["spec"], "user": "carol"}}, ADMIN, "kube-system")
    assert e.value.code == 422
    for bad in ({"spec": {"user": "carol"}}, {"spec": {**_attrs()["spec"]}},
                {"spec": {**_attrs()["spec"], "user": "c", "nonResourceAttributes": {}}}):
        with pytest.raises(errors.StatusError) as e:
            await sar(bad, ADMIN, None)
        assert e.value.code == 422, bad
    with pytest.raises(errors.StatusError) as e:
        await ssar(["not", "an", "object"], CAROL, None)
    assert e.value.code == 400


async def test_rules_review_and_whoami(reviews):
    rules = reviews[("authorization.k8s.io", "selfsubjectrulesreviews")]
    status = (await rules({"spec": {"namespace": "default"}}, CAROL, None))["status"]
    assert {"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"],
            "resourceNames": ["settings"]} in status["resourceRules"]
    assert {"verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version",
                                                  "/version/"]} in status["nonResourceRules"]
    assert status["incomplete"] is False
    other_ns = (await rules({"spec": {"namespace": "kube-system"}}, CAROL, None))["status"]
    assert not any("configmaps" in r["resources"] for r in other_ns["resourceRules"])
    admin = (await rules({"spec": {"namespace": "default"}}, ADMIN, None))["status"]
    assert admin["resourceRules"][0] == {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}
    assert (await rules({"spec": {}}, NODE, None))["status"]["incomplete"] is True
    whoami = reviews[("authentication.k8s.io", "selfsubjectreviews")]
    out = await whoami({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
                       CAROL, None)
    assert out["status"]["userInfo"] == {"username": "carol", "uid": "u-1",
                                         "groups": ["system:authenticated"],
                                         "extra": {"team": ["a", "b"]}}
