"""Namespaces, garbage collection and service allocation through kubectl against a real server:
system namespaces and default ServiceAccounts, namespace deletion, cascading deletes, NodePorts."""

from __future__ import annotations

import pytest

from tests.harness import wait_for

pytestmark = pytest.mark.integration

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: c, image: busybox}}]
"""


def names(server, *args: str) -> list[str]:
    out = server.kubectl("get", *args, "-o", "jsonpath={.items[*].metadata.name}").stdout
    return out.split()


def test_system_namespaces_service_accounts_and_kubernetes_service(server):
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= set(
        names(server, "namespaces"))
    wait_for(lambda: len(names(server, "serviceaccounts", "-A", "--field-selector",
                                "metadata.name=default")) >= 4, 30, what="default SAs")
    svc = server.kubectl_json("get", "service", "kubernetes")
    assert svc["spec"]["clusterIP"] == "10.43.0.1"
    ep = server.kubectl_json("get", "endpoints", "kubernetes")
    assert ep["subsets"][0]["ports"][0]["port"] == server.port


def test_namespace_deletion_removes_everything(server):
    server.kubectl("create", "-f", "-", input="apiVersion: v1\nkind: Namespace\n"
                                               "metadata: {name: doomed}\n")
    server.kubectl("create", "-f", "-",
                   input=DEPLOYMENT.format(name="web", ns="doomed", replicas=3))
    server.kubectl("create", "-f", "-", input="apiVersion: v1\nkind: ConfigMap\n"
                                               "metadata: {name: cm, namespace: doomed}\n")
    wait_for(lambda: len(names(server, "pods", "-n", "doomed")) == 3, 30, what="pods")
    wait_for(lambda: "default" in names(server, "serviceaccounts", "-n", "doomed"), 30,
             what="default SA in doomed")
    server.kubectl("delete", "namespace", "doomed", "--wait=false")
    wait_for(lambda: "doomed" not in names(server, "namespaces"), 60, what="namespace gone")


@pytest.mark.parametrize("cascade", ["background", "foreground"])
def test_cascading_delete(server, cascade):
    name = f"gc-{cascade}"
    server.kubectl("create", "-f", "-", input=DEPLOYMENT.format(name=name, ns="default",
                                                                replicas=2))
    wait_for(lambda: len(names(server, "pods", "-l", f"app={name}")) == 2, 30, what="pods")
    server.kubectl("delete", "deployment", name, f"--cascade={cascade}", "--wait=false")
    wait_for(lambda: not names(server, "pods", "-l", f"app={name}")
             and not names(server, "replicasets", "-l", f"app={name}")
             and name not in names(server, "deployments"), 60, what="dependents gone")


def test_orphan_keeps_replicaset(server):
    server.kubectl("create", "-f", "-", input=DEPLOYMENT.format(name="orph", ns="default",
                                                                replicas=1))
    wait_for(lambda: names(server, "replicasets", "-l", "app=orph"), 30, what="rs")
    server.kubectl("delete", "deployment", "orph", "--cascade=orphan")
    rs = server.kubectl_json("get", "replicasets", "-l", "app=orph")["items"]
    assert len(rs) == 1 and not rs[0]["metadata"].get("ownerReferences")
    server.kubectl("delete", "replicasets", "-l", "app=orph")


def test_node_port_conflict_and_release(server):
    svc = """
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec: {{type: NodePort, selector: {{app: x}}, ports: [{{port: 80, nodePort: 30080}}]}}
"""
    server.kubectl("create", "-f", "-", input=svc.format(name="np-a"))
    got = server.kubectl_json("get", "service", "np-a")
    assert got["spec"]["ports"][0]["nodePort"] == 30080
    assert got["spec"]["clusterIP"].startswith("10.43.")
    res = server.kubectl("create", "-f", "-", input=svc.format(name="np-b"), check=False)
    assert res.returncode != 0
    assert 'The Service "np-b" is invalid: spec.ports[0].nodePort: Invalid value: 30080: ' \
        'provided port is already allocated' in res.stderr
    server.kubectl("delete", "service", "np-a")
    server.kubectl("create", "-f", "-", input=svc.format(name="np-b"))
    server.kubectl("delete", "service", "np-b")
