"""In-cluster clients on a real server with its embedded agent and real podman pods: the
service-account token volume (kube-api-access-*), kube-root-ca.crt, KUBERNETES_SERVICE_* env,
downwardAPI volumes and resourceFieldRef env, and the official Python client's
load_incluster_config() run inside a pod (image k3py.local/python-k8s, built offline by
airgap/build-python-image.sh and cached between runs).

The server listens on all addresses: a pod on podman's bridge reaches it at the node IP."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
import uuid

import pytest

from tests.harness import ServerProcess, wait_for
from tests.integration.agents import IMAGE, PY_IMAGE, build_python_image, embedded_node

pytestmark = pytest.mark.integration

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
BUSYBOX = IMAGE


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    build_python_image()
    # pods reach the API at the node's address, so the server listens on every address
    with embedded_node(tmp_path_factory.mktemp("incluster"), "inc",
                       bind_address="0.0.0.0") as srv:
        n = srv.kubectl_json("get", "node", srv.node)
        node_ip = next(a["address"] for a in n["status"]["addresses"]
                       if a["type"] == "InternalIP")
        yield srv, srv.node, node_ip


def _apply(srv: ServerProcess, *objs: dict) -> None:
    for obj in objs:
        srv.kubectl("apply", "-f", "-", input=json.dumps(obj))


def _namespace(srv: ServerProcess) -> str:
    ns = f"inc-{uuid.uuid4().hex[:6]}"
    srv.kubectl("create", "namespace", ns)
    return ns


def _phase(srv: ServerProcess, ns: str, name: str) -> str:
    return srv.kubectl_json("get", "pod", name, "-n", ns).get("status", {}).get("phase", "")


def _jwt_claims(token: str) -> dict:
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _api_status(srv: ServerProcess, path: str, token: str) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(srv.url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _pod_reader(ns: str) -> list[dict]:
    return [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "pod-reader", "namespace": ns},
             "rules": [{"apiGroups": [""], "resources": ["pods"],
                        "verbs": ["get", "list", "watch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "default-reads-pods", "namespace": ns},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                         "name": "pod-reader"},
             "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]}]


_CLIENT_SCRIPT = """
import os
from kubernetes import client, config
config.load_incluster_config()
v1 = client.CoreV1Api()
ns = open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read()
names = sorted(p.metadata.name for p in v1.list_namespaced_pod(ns).items)
me = v1.read_namespaced_pod(os.environ['POD_NAME'], ns)
print('PODS=' + ','.join(names))
print('SELF=%s %s %s' % (me.metadata.name, me.spec.service_account_name, me.metadata.uid))
"""


def test_python_client_in_a_pod(cluster):
    srv, node, node_ip = cluster
    ns = _namespace(srv)  # the pod is created right away: admission waits for "default"
    _apply(srv, *_pod_reader(ns), {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "py", "namespace": ns},
        "spec": {"nodeName": node, "restartPolicy": "Never", "containers": [{
            "name": "c", "image": PY_IMAGE, "imagePullPolicy": "IfNotPresent",
            "command": ["python3", "-c", _CLIENT_SCRIPT],
            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.name"}}}]}]}})
    pod = srv.kubectl_json("get", "pod", "py", "-n", ns)
    assert pod["spec"]["serviceAccountName"] == "default"
    wait_for(lambda: _phase(srv, ns, "py") in ("Succeeded", "Failed"), 120, 0.5,
             "the client pod to finish")
    logs = srv.kubectl("logs", "py", "-n", ns).stdout
    assert _phase(srv, ns, "py") == "Succeeded", logs
    assert "PODS=py" in logs, logs
    assert f"SELF=py default {pod['metadata']['uid']}" in logs, logs


def test_token_volume_env_and_downward_api(cluster):
    srv, node, node_ip = cluster
    ns = _namespace(srv)
    script = (
        "echo HOST=$KUBERNETES_SERVICE_HOST; echo PORT=$KUBERNETES_SERVICE_PORT; "
        "echo HTTPS=$KUBERNETES_SERVICE_PORT_HTTPS; echo KPORT=$KUBERNETES_PORT; "
        "echo ADDR=$KUBERNETES_PORT_443_TCP_ADDR; "
        "echo MEM=$MEM_LIMIT_MI; echo CPU=$CPU_REQ_M; echo CPULIM=$CPU_LIMIT; "
        f"echo NSFILE=$(cat {SA_DIR}/namespace); "
        "echo LABELS=$(cat /etc/podinfo/labels); echo NAME=$(cat /etc/podinfo/name); "
        "echo PMEM=$(cat /etc/podinfo/mem); echo PNS=$(cat /etc/projected/ns); "
        "echo PKEY=$(cat /etc/projected/conf/greeting); echo READY; "
        "trap 'exit 0' TERM; while true; do sleep 1; done")
    _apply(srv, *_pod_reader(ns), {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": ns},
        "data": {"greeting": "hello"}}, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bb", "namespace": ns, "labels": {"app": "bb", "tier": "x"}},
        "spec": {"nodeName": node, "containers": [{
            "name": "c", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", script],
            "resources": {"limits": {"memory": "64Mi", "cpu": "500m"},
                          "requests": {"memory": "32Mi", "cpu": "250m"}},
            "env": [
                {"name": "MEM_LIMIT_MI", "valueFrom": {"resourceFieldRef": {
                    "resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "CPU_REQ_M", "valueFrom": {"resourceFieldRef": {
                    "resource": "requests.cpu", "divisor": "1m"}}},
                {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {
                    "resource": "limits.cpu"}}}],
            "volumeMounts": [{"name": "podinfo", "mountPath": "/etc/podinfo"},
                             {"name": "mixed", "mountPath": "/etc/projected"}]}],
            "volumes": [
                {"name": "podinfo", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "mem", "resourceFieldRef": {
                        "containerName": "c", "resource": "limits.memory",
                        "divisor": "1Mi"}}]}},
                {"name": "mixed", "projected": {"sources": [
                    {"configMap": {"name": "cfg", "items": [
                        {"key": "greeting", "path": "conf/greeting"}]}},
                    {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {
                        "fieldPath": "metadata.namespace"}}]}}]}}]}})
    pod = srv.kubectl_json("get", "pod", "bb", "-n", ns)
    vols = [v for v in pod["spec"]["volumes"] if v["name"].startswith("kube-api-access-")]
    assert len(vols) == 1
    mounts = pod["spec"]["containers"][0]["volumeMounts"]
    assert {"name": vols[0]["name"], "mountPath": SA_DIR, "readOnly": True} in mounts
    wait_for(lambda: "READY" in srv.kubectl("logs", "bb", "-n", ns, check=False).stdout,
             90, 0.5, "the busybox pod's output")
    out = dict(line.split("=", 1) for line in
               srv.kubectl("logs", "bb", "-n", ns).stdout.splitlines() if "=" in line)
    port = str(srv.port)
    assert out["HOST"] == node_ip and out["PORT"] == port and out["HTTPS"] == port
    assert out["KPORT"] == f"tcp://{node_ip}:{port}" and out["ADDR"] == node_ip
    assert out["MEM"] == "64" and out["CPU"] == "250" and out["CPULIM"] == "1"
    assert out["NSFILE"] == ns and out["PNS"] == ns and out["PKEY"] == "hello"
    assert out["LABELS"] == 'app="bb" tier="x"' and out["NAME"] == "bb"
    assert out["PMEM"] == "64"

    token = srv.kubectl("exec", "bb", "-n", ns, "--", "cat", f"{SA_DIR}/token").stdout
    claims = _jwt_claims(token)
    assert claims["sub"] == f"system:serviceaccount:{ns}:default"
    assert claims["kubernetes.io"]["pod"] == {"name": "bb", "uid": pod["metadata"]["uid"]}
    assert claims["exp"] - claims["iat"] == 3607
    ca = srv.kubectl("exec", "bb", "-n", ns, "--", "cat", f"{SA_DIR}/ca.crt").stdout
    assert ca == (srv.data_dir / "server" / "tls" / "server-ca.crt").read_text()
    cm = srv.kubectl_json("get", "configmap", "kube-root-ca.crt", "-n", ns)
    assert cm["data"]["ca.crt"] == ca

    # the token works while its pod exists, and not once the pod is gone
    assert _api_status(srv, f"/api/v1/namespaces/{ns}/pods", token) == 200
    assert _api_status(srv, f"/api/v1/namespaces/{ns}/secrets", token) == 403
    srv.kubectl("delete", "pod", "bb", "-n", ns, "--wait=true", timeout=90)
    wait_for(lambda: _api_status(srv, f"/api/v1/namespaces/{ns}/pods", token) == 401, 20,
             0.2, "the bound token to be rejected")


def test_automount_opt_out_and_missing_account(cluster):
    srv, node, _ = cluster
    ns = _namespace(srv)
    base = {"nodeName": node, "containers": [{"name": "c", "image": BUSYBOX,
                                              "command": ["true"]}]}
    _apply(srv, {"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": "quiet", "namespace": ns},
                 "automountServiceAccountToken": False},
           {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "off", "namespace": ns},
            "spec": {**base, "automountServiceAccountToken": False}},
           {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "quiet", "namespace": ns},
            "spec": {**base, "serviceAccountName": "quiet"}})
    for name in ("off", "quiet"):
        pod = srv.kubectl_json("get", "pod", name, "-n", ns)
        assert not pod["spec"].get("volumes"), pod["spec"]
        assert not pod["spec"]["containers"][0].get("volumeMounts")
    bad = srv.kubectl("run", "nosa", "-n", ns, "--image", BUSYBOX,
                      "--overrides", json.dumps({"spec": {"serviceAccountName": "ghost"}}),
                      check=False)
    assert bad.returncode != 0
    assert (f'error looking up service account {ns}/ghost: serviceaccount "ghost" not found'
            in bad.stderr), bad.stderr
    assert "Forbidden" in bad.stderr or "forbidden" in bad.stderr
