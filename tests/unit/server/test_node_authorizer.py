"""The Node authorizer over a real Registry and its informers: node A may reach its own Node
and Lease, its pods and exactly the objects they reference (and the TLS secrets of the
Ingresses k3py serves); node B's pod's secret, other
nodes' objects, cluster-wide lists and writes outside its pods are refused (403 from the
chain: SystemMasters -> Node -> RBAC -> Deny, as the server builds it)."""

from __future__ import annotations

import pytest

from k3py.api import errors
from k3py.api.localpath import CLEANUP_FINALIZER, PROVISIONER
from k3py.api.podrefs import pod_references
from k3py.server.apiserver.auth import User
from k3py.server.bootstrap import authorizer_chain
from k3py.server.controllers.ingress import ensure_ingress_class
from tests.unit.conftest import eventually

pytestmark = pytest.mark.unit

NODE_A = User("system:node:a", ("system:nodes", "system:authenticated"))
NODE_B = User("system:node:b", ("system:nodes", "system:authenticated"))


def _pod(name, node, secret="", cm="", claim=""):
    vols = []
    if secret:
        vols.append({"name": "s", "secret": {"secretName": secret}})
    if claim:
        vols.append({"name": "d", "persistentVolumeClaim": {"claimName": claim}})
    env = [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": cm, "key": "k"}}}] if cm \
        else []
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "serviceAccountName": "builder", "volumes": vols,
                     "containers": [{"name": "c", "image": "busybox", "env": env}]}}


@pytest.fixture
async def chain(env):
    reg = env.registry
    await reg.create(env.res("pods"), "default", _pod("pa", "a", secret="sa-secret",
                                                      cm="a-config", claim="data"))
    await reg.create(env.res("pods"), "default", _pod("pb", "b", secret="b-secret"))
    await reg.create(env.res("persistentvolumeclaims"), "default", {
        "metadata": {"name": "data"}, "spec": {"volumeName": "pv-1", "accessModes": [
            "ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    await _ingress_objects(env)
    # a deleted local-path volume of node a: a may read it (it removes its directory)
    await reg.create(env.res("persistentvolumes"), None, {
        "metadata": {"name": "pvc-old", "finalizers": [CLEANUP_FINALIZER],
                     "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "hostPath": {"path": "/srv/pvc-old"}, "nodeAffinity": {"required": {
                     "nodeSelectorTerms": [{"matchExpressions": [{
                         "key": "kubernetes.io/hostname", "operator": "In",
                         "values": ["a"]}]}]}}}})
    await reg.delete(env.res("persistentvolumes"), None, "pvc-old", {})
    chain = authorizer_chain(env.ctx.informers)
    await env.ctx.informers.wait_synced()
    await eventually(lambda: env.ctx.informers.informer("", "pods").get("default", "pb"))
    await eventually(lambda: (env.ctx.informers.informer("", "persistentvolumes")
                              .get(None, "pvc-old") or {}).get("metadata", {})
                     .get("deletionTimestamp"))
    await eventually(lambda: env.ctx.informers.informer(
        "networking.k8s.io", "ingresses").get("default", "nginx"))
    return chain


async def _ingress_objects(env) -> None:
    """The k3py IngressClass; a served Ingress naming a TLS secret and an Opaque one; an
    Ingress of another class naming a TLS secret."""
    await ensure_ingress_class(env.registry, True)
    tls = {"tls.crt": "", "tls.key": ""}
    for name, type_ in (("web-tls", "kubernetes.io/tls"), ("opaque", "Opaque"),
                        ("nginx-tls", "kubernetes.io/tls")):
        await env.registry.create(env.res("secrets"), "default", {
            "metadata": {"name": name}, "type": type_, "data": tls})
    ing = env.registry.resources.get("networking.k8s.io", "v1", "ingresses")
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    for name, cls, secrets in (("web", None, ["web-tls", "opaque"]),
                               ("nginx", "nginx", ["nginx-tls"])):
        await env.registry.create(ing, "default", {
            "metadata": {"name": name}, "spec": {
                "ingressClassName": cls, "defaultBackend": backend,
                "tls": [{"secretName": s} for s in secrets]}})


def allowed(chain, user, verb, plural, ns=None, name=None, sub="", group="",
            fields=None) -> bool:
    try:
        chain.authorize(user, verb, group, plural, ns, name, sub, fields)
    except errors.StatusError as e:
        assert e.code == 403 and e.reason == "Forbidden"
        return False
    return True


CASES = [
    # (user, verb, plural, namespace, name, subresource, group, fields, expected)
    (NODE_A, "get", "nodes", None, "a", "", "", None, True),
    (NODE_A, "patch", "nodes", None, "a", "status", "", None, True),
    (NODE_A, "get", "nodes", None, "b", "", "", None, False),
    (NODE_A, "list", "nodes", None, None, "", "", None, False),
    (NODE_A, "watch", "nodes", None, None, "", "", {"metadata.name": "a"}, True),
    (NODE_A, "update", "leases", "kube-node-lease", "a", "", "coordination.k8s.io", None, True),
    (NODE_A, "update", "leases", "kube-node-lease", "b", "", "coordination.k8s.io", None,
     False),
    (NODE_A, "get", "pods", "default", "pa", "", "", None, True),
    (NODE_A, "get", "pods", "default", "pb", "", "", None, False),
    (NODE_A, "list", "pods", None, None, "", "", None, False),
    (NODE_A, "list", "pods", None, None, "", "", {"spec.nodeName": "a"}, True),
    (NODE_A, "watch", "pods", None, None, "", "", {"spec.nodeName": "b"}, False),
    (NODE_A, "patch", "pods", "default", "pa", "status", "", None, True),
    (NODE_A, "patch", "pods", "default", "pb", "status", "", None, False),
    (NODE_A, "delete", "pods", "default", "pa", "", "", None, True),
    (NODE_A, "delete", "pods", "default", "pb", "", "", None, False),
    (NODE_A, "create", "pods", "default", None, "", "", None, False),
    (NODE_A, "update", "pods", "default", "pa", "", "", None, False),
    (NODE_A, "get", "secrets", "default", "sa-secret", "", "", None, True),
    (NODE_A, "get", "secrets", "default", "b-secret", "", "", None, False),
    (NODE_B, "get", "secrets", "default", "b-secret", "", "", None, True),
    (NODE_A, "list", "secrets", "default", None, "", "", None, False),
    (NODE_A, "watch", "secrets", "default", None, "", "", {"metadata.name": "sa-secret"}, True),
    (NODE_A, "update", "secrets", "default", "sa-secret", "", "", None, False),
    (NODE_A, "get", "configmaps", "default", "a-config", "", "", None, True),
    (NODE_A, "get", "configmaps", "kube-system", "a-config", "", "", None, False),
    (NODE_A, "get", "persistentvolumeclaims", "default", "data", "", "", None, True),
    (NODE_A, "get", "persistentvolumes", None, "pv-1", "", "", None, True),
    (NODE_B, "get", "persistentvolumes", None, "pv-1", "", "", None, False),
    (NODE_A, "get", "persistentvolumes", None, "pvc-old", "", "", None, True),
    (NODE_B, "get", "persistentvolumes", None, "pvc-old", "", "", None, False),
    (NODE_A, "update", "persistentvolumes", None, "pvc-old", "", "", None, True),
    (NODE_B, "update", "persistentvolumes", None, "pvc-old", "", "", None, False),
    (NODE_A, "update", "persistentvolumes", None, "pv-1", "", "", None, False),
    (NODE_A, "create", "serviceaccounts", "default", "builder", "token", "", None, True),
    (NODE_A, "create", "serviceaccounts", "default", "admin", "token", "", None, False),
    # the TLS secrets of the Ingresses k3py serves, to every node; nothing else of theirs
    (NODE_A, "get", "secrets", "default", "web-tls", "", "", None, True),
    (NODE_B, "watch", "secrets", "default", None, "", "", {"metadata.name": "web-tls"}, True),
    (NODE_A, "update", "secrets", "default", "web-tls", "", "", None, False),
    (NODE_A, "get", "secrets", "default", "opaque", "", "", None, False),
    (NODE_A, "get", "secrets", "default", "nginx-tls", "", "", None, False),
    (NODE_A, "list", "ingresses", None, None, "", "networking.k8s.io", None, True),
    (NODE_A, "get", "ingressclasses", None, "k3py", "", "networking.k8s.io", None, True),
    (NODE_A, "update", "ingresses", "default", "web", "status", "networking.k8s.io", None,
     False),
    (NODE_A, "list", "services", None, None, "", "", None, True),
    (NODE_A, "watch", "endpointslices", None, None, "", "discovery.k8s.io", None, True),
    (NODE_A, "create", "services", "default", None, "", "", None, False),
    (NODE_A, "create", "events", "default", None, "", "", None, True),
    (NODE_A, "delete", "events", "default", "x", "", "", None, False),
    (NODE_A, "list", "namespaces", None, None, "", "", None, False),
    (NODE_A, "create", "clusterrolebindings", None, None, "", "rbac.authorization.k8s.io",
     None, False),
    (User("alice", ("system:authenticated",)), "get", "nodes", None, "a", "", "", None, False),
]


async def test_node_access_table(chain):
    got = [allowed(chain, u, v, p, ns, n, s, g, f) for u, v, p, ns, n, s, g, f, _ in CASES]
    wrong = [(c[0].name, *c[1:8]) for c, ok in zip(CASES, got, strict=True) if ok != c[8]]
    assert not wrong, wrong
    assert chain.names() == ["SystemMasters", "Node", "RBAC", "Deny"]


def test_pod_references():
    pod = _pod("p", "a", secret="s1", cm="c1", claim="d1")
    pod["spec"]["volumes"].append({"name": "scratch", "ephemeral": {}})
    pod["spec"]["imagePullSecrets"] = [{"name": "pull"}]
    assert pod_references(pod) == {
        ("secrets", "s1"), ("configmaps", "c1"), ("persistentvolumeclaims", "d1"),
        ("persistentvolumeclaims", "p-scratch"), ("secrets", "pull"),
        ("serviceaccounts", "builder")}


def test_labels_a_node_may_set_on_itself():
    from k3py.api.nodelabels import label_allowed_for_node
    for ok in ("site", "example.com/rack", "kubernetes.io/hostname", "kubernetes.io/arch",
               "topology.kubernetes.io/zone", "node.kubernetes.io/instance-type",
               "kubelet.kubernetes.io/x", "node.kubernetes.io/anything"):
        assert label_allowed_for_node(ok), ok
    for bad in ("node-role.kubernetes.io/control-plane", "node-restriction.kubernetes.io/t",
                "kubernetes.io/role", "foo.k8s.io/x", "k8s.io/x"):
        assert not label_allowed_for_node(bad), bad
