"""Service-account admission for pods (kube-api-access volume, 403 for a missing account,
waiting for a new namespace's "default"), the kube-root-ca.crt publisher, pod-bound tokens
(minting, rotation, rejection once the pod is gone) and the RBAC rule matching, on a real
Registry over SQLite (tests/unit/conftest.py)."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from k3py.api import errors
from k3py.server.apiserver.auth import User
from k3py.server.controllers.rootca import ROOT_CA_CONFIGMAP, RootCAController
from k3py.server.edge.podtokens import PodTokens, token_sources
from k3py.server.rbac import rule_allows, subject_matches
from k3py.server.serviceaccounts import (
    SA_MOUNT_PATH,
    ServiceAccountAdmission,
    TokenIssuer,
    mount_service_account_token,
    should_automount,
)
from tests.unit.conftest import eventually


def _pod(name: str = "p", **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def _sa(name: str, ns: str = "default", **extra) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": ns}, **extra}


def _issuer() -> TokenIssuer:
    key = ec.generate_private_key(ec.SECP256R1())
    return TokenIssuer(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))


def test_mount_adds_one_volume_and_a_mount_per_container():
    spec = {"initContainers": [{"name": "i"}],
            "containers": [{"name": "a"}, {"name": "b", "volumeMounts": [
                {"name": "mine", "mountPath": SA_MOUNT_PATH}]}]}
    name = mount_service_account_token(spec, suffix="abcde")
    assert name == "kube-api-access-abcde"
    assert spec["initContainers"][0]["volumeMounts"] == [
        {"name": name, "readOnly": True, "mountPath": SA_MOUNT_PATH}]
    assert spec["containers"][0]["volumeMounts"][0]["name"] == name
    assert spec["containers"][1]["volumeMounts"] == [{"name": "mine",
                                                      "mountPath": SA_MOUNT_PATH}]
    (vol,) = spec["volumes"]
    sources = vol["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
    assert sources[1]["configMap"]["name"] == ROOT_CA_CONFIGMAP
    assert sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"] == \
        "metadata.namespace"
    # again: the existing volume is reused, nothing added
    assert mount_service_account_token(spec) is None
    assert len(spec["volumes"]) == 1


def test_automount_precedence():
    assert should_automount({}, None)
    assert not should_automount({}, {"automountServiceAccountToken": False})
    assert should_automount({"automountServiceAccountToken": True},
                            {"automountServiceAccountToken": False})
    assert not should_automount({"automountServiceAccountToken": False}, None)


async def test_admission_on_create(env):
    env.registry.admission.add_mutator("ServiceAccount", ServiceAccountAdmission(env.registry, 0.2))
    pods, sas = env.res("pods"), env.res("serviceaccounts")
    with pytest.raises(errors.StatusError) as e:
        await env.registry.create(pods, "default", _pod("nosa"))
    assert e.value.code == 403
    assert e.value.message == ('pods "nosa" is forbidden: error looking up service account '
                               'default/default: serviceaccount "default" not found')
    await env.registry.create(sas, "default", _sa("default"))
    await env.registry.create(sas, "default", _sa("quiet", automountServiceAccountToken=False))
    pod = await env.registry.create(pods, "default", _pod("a"))
    assert pod["spec"]["serviceAccountName"] == "default"
    assert [v["name"][:16] for v in pod["spec"]["volumes"]] == ["kube-api-access-"]
    quiet = await env.registry.create(pods, "default", _pod("q", serviceAccountName="quiet"))
    assert not quiet["spec"].get("volumes")
    off = await env.registry.create(pods, "default", _pod("o",
                                                          automountServiceAccountToken=False))
    assert not off["spec"].get("volumes")


async def test_creator_does_not_own_what_admission_adds(env):
    """As upstream's create handler, the creator's managed fields are taken before the
    admission plug-ins: its containers and their defaults, not the token volume and mounts."""
    env.registry.admission.add_mutator("ServiceAccount", ServiceAccountAdmission(env.registry, 0.2))
    await env.registry.create(env.res("serviceaccounts"), "default", _sa("default"))
    pod = await env.registry.create(env.res("pods"), "default", _pod("owned"),
                                    field_manager="kubectl-run")
    assert pod["spec"]["volumes"][0]["name"].startswith("kube-api-access-")
    (entry,) = pod["metadata"]["managedFields"]
    assert entry["manager"] == "kubectl-run"
    spec = entry["fieldsV1"]["f:spec"]
    container = spec["f:containers"]['k:{"name":"c"}']
    assert "f:image" in container and "f:imagePullPolicy" in container  # sent, defaulted
    assert "f:volumeMounts" not in container
    assert "f:volumes" not in spec


async def test_admission_waits_for_the_default_account(env):
    env.registry.admission.add_mutator("ServiceAccount", ServiceAccountAdmission(env.registry, 5.0))

    async def later():
        await asyncio.sleep(0.3)
        await env.registry.create(env.res("serviceaccounts"), "default", _sa("default"))
    task = asyncio.create_task(later())
    pod = await env.registry.create(env.res("pods"), "default", _pod("early"))
    await task
    assert pod["spec"]["volumes"][0]["name"].startswith("kube-api-access-")


async def test_root_ca_published_and_repaired(env):
    env.ctx.extra["root_ca_pem"] = "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"
    await env.start(RootCAController)
    cms = env.res("configmaps")

    async def published():
        cm = await env.registry.try_get(cms, "default", ROOT_CA_CONFIGMAP)
        return cm is not None and cm["data"] == {"ca.crt": env.ctx.extra["root_ca_pem"]}
    await eventually(published, what="kube-root-ca.crt")

    def tamper(cm: dict) -> dict:
        cm["data"] = {"ca.crt": "nope"}
        return cm
    await env.registry.update_with(cms, "default", ROOT_CA_CONFIGMAP, tamper)
    await eventually(published, what="kube-root-ca.crt repaired")
    await env.registry.delete(cms, "default", ROOT_CA_CONFIGMAP, {})
    await eventually(published, what="kube-root-ca.crt recreated")


def test_pod_tokens_minted_bound_and_rotated():
    issuer = _issuer()
    now = [1000.0]
    tokens = PodTokens(issuer, lambda ns, name: "sa-uid", clock=lambda: now[0])
    pod = _pod("p", serviceAccountName="default")
    pod["metadata"].update(namespace="ns", uid="pod-uid")
    mount_service_account_token(pod["spec"], suffix="zzzzz")
    assert token_sources(pod) == [("kube-api-access-zzzzz/token", "", 3607)]
    first = tokens.object_for(pod)
    assert first is not None
    token = first["tokens"]["kube-api-access-zzzzz/token"]["token"]
    assert tokens.object_for(pod) is first  # not due: the same tokens
    alive = {"pod-uid"}
    issuer.pod_alive = lambda ns, name, uid: uid in alive
    user = issuer.authenticate(token)
    assert user is not None and user.name == "system:serviceaccount:ns:default"
    now[0] += 0.8 * 3607 + 1  # past 80 % of the lifetime (the issuer's clock is real time)
    assert tokens.due(pod)
    second = tokens.object_for(pod)
    assert second is not first and not tokens.due(pod)
    alive.clear()
    assert issuer.authenticate(token) is None  # the pod is gone
    issuer.pod_alive = lambda ns, name, uid: None  # unknown: not rejected for that
    assert issuer.authenticate(token) is not None
    accounts = {("ns", "default"): "sa-uid"}
    issuer.account_uid = lambda ns, name: accounts.get((ns, name), "")
    assert issuer.authenticate(token) is not None
    accounts[("ns", "default")] = "another-uid"  # deleted and made again: not the same
    assert issuer.authenticate(token) is None
    del accounts[("ns", "default")]  # deleted
    assert issuer.authenticate(token) is None
    issuer.account_uid = lambda ns, name: None  # unknown (cache not synced)
    assert issuer.authenticate(token) is not None


def test_pod_tokens_honour_audience_and_minimum_lifetime():
    pod = _pod("p", volumes=[{"name": "v", "projected": {"sources": [
        {"serviceAccountToken": {"path": "t", "audience": "vault", "expirationSeconds": 60}}]}}])
    pod["metadata"].update(namespace="ns", uid="u")
    assert token_sources(pod) == [("v/t", "vault", 600)]
    obj = PodTokens(_issuer(), lambda ns, name: "").object_for(pod)
    assert obj is not None and obj["metadata"] == {"namespace": "ns", "name": "p", "uid": "u"}


def test_rbac_rules_and_subjects():
    rule = {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}
    assert rule_allows(rule, "list", "", "pods", None)
    assert rule_allows(rule, "get", "", "pods", "x", "log")
    assert not rule_allows(rule, "delete", "", "pods", "x")
    assert not rule_allows(rule, "get", "apps", "pods", "x")
    assert not rule_allows(rule, "get", "", "pods", "x", "exec")
    named = {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"], "resourceNames": ["a"]}
    assert rule_allows(named, "get", "apps", "deployments", "a")
    assert not rule_allows(named, "get", "apps", "deployments", "b")
    sa = User("system:serviceaccount:ns:default", ("system:serviceaccounts",))
    assert subject_matches({"kind": "ServiceAccount", "name": "default"}, sa, "ns")
    assert not subject_matches({"kind": "ServiceAccount", "name": "default"}, sa, "other")
    assert subject_matches({"kind": "Group", "name": "system:serviceaccounts"}, sa, None)
    assert subject_matches({"kind": "User", "name": sa.name}, sa, None)


def test_a_token_for_another_audience_does_not_authenticate():
    from k3py import pki
    from k3py.server.serviceaccounts import TokenIssuer
    key = pki._key_pem(pki._new_key())
    issuer = TokenIssuer(key)
    def token(**kw) -> str:
        return issuer.issue("default", "sa", "uid-1", **kw)[0]
    assert issuer.authenticate(token()) is not None
    assert issuer.authenticate(token(audiences=["vault"])) is None
    assert issuer.authenticate(token(audiences=["vault", "k3s"])) is not None
