"""Namespace lifecycle, garbage collection and Services through kubectl against a real
server: namespace delete removes contents, GC removes orphans, default SA, ClusterIPs."""

from __future__ import annotations

import json

import pytest

from tests.harness import wait_for

pytestmark = pytest.mark.integration

RS = """
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: owner, namespace: default}
spec:
  replicas: 0
  selector: {matchLabels: {app: owner}}
  template:
    metadata: {labels: {app: owner}}
    spec: {containers: [{name: c, image: busybox}]}
"""


def apply(server, *objs: dict) -> None:
    server.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in objs))


def namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def deployment(name: str, ns: str = "default") -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "containers": [{"name": "c", "image": "busybox"}]}}}}


def service(name: str, type_: str = "ClusterIP", node_port: int | None = None) -> dict:
    port: dict = {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    if node_port:
        port["nodePort"] = node_port
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": type_, "selector": {"app": name}, "ports": [port]}}


def gone(server, *args: str) -> bool:
    out = server.kubectl("get", *args, "-o", "name", check=False)
    return out.returncode != 0 and "NotFound" in out.stderr


def test_default_service_account_in_new_namespace(server):
    apply(server, namespace("sa-check"))
    sa = wait_for(lambda: server.kubectl_json("get", "serviceaccount", "default",
                                              "-n", "sa-check"), 30, what="default SA")
    assert sa["metadata"]["name"] == "default"


def test_namespace_delete_removes_contents(server):
    srv = server
    apply(srv, namespace("doomed"))
    apply(srv,
          {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "cfg", "namespace": "doomed"}, "data": {"a": "b"}},
          {"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "sec", "namespace": "doomed"}, "stringData": {"a": "b"}},
          {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pod1", "namespace": "doomed"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
          deployment("dep", "doomed"))
    wait_for(lambda: srv.kubectl_json("get", "rs", "-n", "doomed")["items"], 30,
             what="replicaset in doomed")
    srv.kubectl("delete", "namespace", "doomed", "--wait=false")
    out = srv.kubectl("get", "namespace", "doomed", "-o", "json", check=False)
    if out.returncode == 0:
        assert json.loads(out.stdout)["status"]["phase"] == "Terminating"
    else:  # removed already, between the delete and this read (one read: no check-then-get race)
        assert "NotFound" in out.stderr, out.stderr
    wait_for(lambda: gone(srv, "namespace", "doomed"), 60, what="namespace removed")
    for kind in ("configmaps", "secrets", "pods", "deployments", "replicasets"):
        items = srv.kubectl_json("get", kind, "-n", "doomed")["items"]
        assert items == [], kind


def test_gc_deletes_orphans(server):
    srv = server
    srv.kubectl("apply", "-f", "-", input=RS)
    uid = srv.kubectl_json("get", "rs", "owner")["metadata"]["uid"]
    dependent = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "dependent", "namespace": "default",
                              "labels": {"test": "gc"},
                              "ownerReferences": [{"apiVersion": "apps/v1",
                                                   "kind": "ReplicaSet", "name": "owner",
                                                   "uid": uid}]}}
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "dependent-pod", "namespace": "default",
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                             "name": "owner", "uid": uid}]},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    srv.kubectl("apply", "-f", "-", input=json.dumps(pod))
    srv.kubectl("apply", "-f", "-", input=json.dumps(dependent))
    # a dependent whose owner never existed goes on its own
    ghost = json.loads(json.dumps(pod))
    ghost["metadata"]["name"] = "ghost-pod"
    ghost["metadata"]["ownerReferences"][0].update(name="ghost", uid="00000000-dead")
    srv.kubectl("apply", "-f", "-", input=json.dumps(ghost))
    wait_for(lambda: gone(srv, "pod", "ghost-pod"), 30, what="ghost-owned pod collected")
    assert not gone(srv, "pod", "dependent-pod")
    srv.kubectl("delete", "rs", "owner")
    wait_for(lambda: gone(srv, "pod", "dependent-pod"), 30, what="dependent pod collected")


def test_foreground_and_orphan_deletion(server):
    srv = server
    apply(srv, deployment("fg"))
    wait_for(lambda: srv.kubectl_json("get", "rs", "-l", "app=fg")["items"], 30,
             what="fg replicaset")
    srv.kubectl("delete", "deployment", "fg", "--cascade=foreground", "--timeout=60s")
    assert gone(srv, "deployment", "fg")
    wait_for(lambda: not srv.kubectl_json("get", "rs", "-l", "app=fg")["items"], 30,
             what="fg replicaset gone")

    apply(srv, deployment("orph"))
    wait_for(lambda: srv.kubectl_json("get", "rs", "-l", "app=orph")["items"], 30,
             what="orph replicaset")
    srv.kubectl("delete", "deployment", "orph", "--cascade=orphan")
    wait_for(lambda: gone(srv, "deployment", "orph"), 30, what="orph deployment gone")
    rs = wait_for(lambda: [r for r in srv.kubectl_json("get", "rs", "-l", "app=orph")["items"]
                           if not r["metadata"].get("ownerReferences")], 30,
                  what="orphaned replicaset")
    assert rs


def test_service_gets_cluster_ip_and_endpoints(server):
    srv = server
    apply(srv, service("websvc"))
    svc = srv.kubectl_json("get", "service", "websvc")
    ip = svc["spec"]["clusterIP"]
    assert ip.startswith("10.43.") and ip not in ("10.43.0.0", "10.43.0.1")
    assert svc["spec"]["clusterIPs"] == [ip]
    kube = srv.kubectl_json("get", "service", "kubernetes")
    assert kube["spec"]["clusterIP"] == "10.43.0.1"
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "websvc-pod", "labels": {"app": "websvc"}},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    srv.kubectl("apply", "-f", "-", input=json.dumps(pod))
    srv.kubectl("patch", "pod", "websvc-pod", "--subresource=status", "--type=merge", "-p",
                json.dumps({"status": {"phase": "Running", "podIP": "10.42.0.7",
                                       "conditions": [{"type": "Ready", "status": "True"}]}}))

    def endpoints():
        ep = srv.kubectl_json("get", "endpoints", "websvc")
        return [a["ip"] for s in ep.get("subsets") or [] for a in s.get("addresses") or []]
    assert wait_for(endpoints, 30, what="endpoints") == ["10.42.0.7"]

    def slices():
        items = srv.kubectl_json("get", "endpointslices", "-l",
                                 "kubernetes.io/service-name=websvc")["items"]
        return [e["addresses"][0] for s in items for e in s.get("endpoints") or []]
    assert wait_for(slices, 30, what="endpointslice") == ["10.42.0.7"]


def test_node_port_conflict_is_rejected(server):
    srv = server
    apply(srv, service("np1", "NodePort", 30080))
    assert srv.kubectl_json("get", "service", "np1")["spec"]["ports"][0]["nodePort"] == 30080
    res = srv.kubectl("apply", "-f", "-", input=json.dumps(service("np2", "NodePort", 30080)),
                      check=False)
    assert res.returncode != 0
    assert "provided port is already allocated" in res.stderr


def names(server, *args: str) -> list[str]:
    out = server.kubectl("get", *args, "-o", "jsonpath={.items[*].metadata.name}").stdout
    return out.split()


def test_system_namespaces_and_kubernetes_service(server):
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= set(
        names(server, "namespaces"))
    wait_for(lambda: len(names(server, "serviceaccounts", "-A", "--field-selector",
                                "metadata.name=default")) >= 4, 30, what="default SAs")
    svc = server.kubectl_json("get", "service", "kubernetes")
    assert svc["spec"]["clusterIP"] == "10.43.0.1"
    ep = server.kubectl_json("get", "endpoints", "kubernetes")
    assert ep["subsets"][0]["ports"][0]["port"] == server.port
    sl = server.kubectl_json("get", "endpointslice", "kubernetes")
    assert sl["endpoints"][0]["addresses"] == [ep["subsets"][0]["addresses"][0]["ip"]]


def test_background_cascade_removes_replicasets_and_pods(server):
    apply(server, deployment("gc-bg"))
    wait_for(lambda: names(server, "pods", "-l", "app=gc-bg"), 30, what="pod")
    server.kubectl("delete", "deployment", "gc-bg", "--cascade=background", "--wait=false")
    wait_for(lambda: not names(server, "pods", "-l", "app=gc-bg")
             and not names(server, "replicasets", "-l", "app=gc-bg"), 60,
             what="dependents gone")


def test_node_port_released_on_delete(server):
    apply(server, service("np-rel-a", "NodePort", 30090))
    server.kubectl("delete", "service", "np-rel-a")
    apply(server, service("np-rel-b", "NodePort", 30090))
    assert server.kubectl_json("get", "service", "np-rel-b")["spec"]["ports"][0][
        "nodePort"] == 30090
    server.kubectl("delete", "service", "np-rel-b")
