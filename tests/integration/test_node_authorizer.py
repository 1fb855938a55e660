"""A stolen node's credential against a real server: two node certificates obtained by the
real join (k3py.agent.join, the same code `k3py agent` runs), then the real kubectl with each.

Node A gets its own Node, the pods bound to it (by name, or listed with
--field-selector spec.nodeName=a), the KubeEdge Devices bound to it (listed and watched the
same way) and the secret its pod uses; it is refused (Forbidden) the
secret only node B's pod uses, all secrets or pods of the cluster, node B's Node and pods, and
writes outside its own pods (create a secret, delete B's pod, bind itself cluster-admin),
and NodeRestriction keeps it from giving itself restricted labels or changing its taints.
The same holds for what node A writes up its tunnel (the real EdgeHub with its join's
certificate): B's pod status, B's Node and Lease and a control-plane label are refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import aiohttp
import pytest

from k3py.agent.edgehub import EdgeHub
from k3py.agent.join import join, node_password, ssl_context
from k3py.agent.metamanager import MetaManager
from k3py.tunnel.message import EDGE, GROUP_RESOURCE, OP_INSERT, OP_UPDATE, new_message
from k3py.tunnel.protocol import NODE_PASSWORD_HEADER
from tests.harness import KUBECTL, ServerProcess, wait_for

pytestmark = pytest.mark.integration


def _pod(name: str, node: str, secret: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "volumes": [{"name": "s", "secret": {
                "secretName": secret}}],
                     "containers": [{"name": "c", "image": "busybox"}]}}


async def _join(srv: ServerProcess, agent_dir: Path, node: str):
    async with aiohttp.ClientSession() as session:
        return await join(session, srv.url, srv.join_token(), node, str(agent_dir))


def _node_kubeconfig(srv: ServerProcess, tmp: Path, node: str) -> Path:
    creds = asyncio.run(_join(srv, tmp / node, node))
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "n",
           "clusters": [{"name": "c", "cluster": {"server": srv.url,
                                                  "certificate-authority": creds.ca_path}}],
           "users": [{"name": "u", "user": {"client-certificate": creds.cert_path,
                                            "client-key": creds.key_path}}],
           "contexts": [{"name": "n", "context": {"cluster": "c", "user": "u"}}]}
    path = tmp / f"{node}.kubeconfig"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nodeauthz")
    srv = ServerProcess(tmp / "srv").start()
    try:
        for node in ("a", "b"):
            srv.kubectl("apply", "-f", "-", input=json.dumps(
                {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}))
        srv.kubectl("create", "secret", "generic", "a-secret", "--from-literal=k=a")
        srv.kubectl("create", "secret", "generic", "b-secret", "--from-literal=k=b")
        for name, node, secret in (("pa", "a", "a-secret"), ("pb", "b", "b-secret")):
            srv.kubectl("apply", "-f", "-", input=json.dumps(_pod(name, node, secret)))
        yield srv, {n: _node_kubeconfig(srv, tmp, n) for n in ("a", "b")}
    finally:
        srv.stop()


def as_node(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, timeout=60)


ALLOWED = [
    ("get", "node", "a"),
    ("get", "pod", "pa"),
    ("get", "pods", "-A", "--field-selector", "spec.nodeName=a"),
    ("get", "secret", "a-secret"),
    ("get", "services", "-A"),
]
REFUSED = [
    ("get", "secret", "b-secret"),
    ("get", "secrets", "-A"),
    ("get", "pods", "-A"),
    ("get", "pod", "pb"),
    ("get", "node", "b"),
    ("get", "nodes"),
    ("create", "secret", "generic", "stolen", "--from-literal=k=v"),
    ("delete", "pod", "pb", "--wait=false"),
    ("create", "clusterrolebinding", "own", "--clusterrole=cluster-admin",
     "--user=system:node:a"),
    ("get", "configmaps", "-n", "kube-system"),
]


@pytest.mark.parametrize("args", ALLOWED, ids=[" ".join(a) for a in ALLOWED])
def test_node_a_may(cluster, args):
    _, configs = cluster
    out = as_node(configs["a"], *args)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("args", REFUSED, ids=[" ".join(a) for a in REFUSED])
def test_node_a_may_not(cluster, args):
    _, configs = cluster
    out = as_node(configs["a"], *args)
    assert out.returncode != 0 and "forbidden" in out.stderr.lower(), (out.stdout, out.stderr)
    assert 'User "system:node:a"' in out.stderr


def test_node_b_reads_its_own_secret_and_the_list_shows_only_its_pods(cluster):
    _, configs = cluster
    out = as_node(configs["b"], "get", "secret", "b-secret", "-o", "jsonpath={.data.k}")
    assert out.returncode == 0 and out.stdout == "Yg==", out.stderr
    out = as_node(configs["b"], "get", "pods", "-A", "--field-selector", "spec.nodeName=b",
                  "-o", "name")
    assert out.stdout.split() == ["pod/pb"], out.stderr


def test_node_restriction_on_its_own_node(cluster):
    """NodeRestriction: node A may label itself with ordinary labels, not call itself a
    control-plane node or set node-restriction labels, nor change its taints."""
    _, configs = cluster
    out = as_node(configs["a"], "label", "node", "a", "site=pole7")
    assert out.returncode == 0, out.stderr
    for label in ("node-role.kubernetes.io/control-plane=true",
                  "node-restriction.kubernetes.io/trusted=true"):
        out = as_node(configs["a"], "label", "node", "a", label)
        assert out.returncode != 0 and "is not allowed to modify labels" in out.stderr, \
            out.stderr
    out = as_node(configs["a"], "taint", "node", "a", "k=v:NoSchedule")
    assert out.returncode != 0 and "not allowed to modify taints" in out.stderr, out.stderr
    out = as_node(configs["a"], "label", "node", "b", "site=pole7")
    assert out.returncode != 0 and "forbidden" in out.stderr.lower()


def _up(operation: str, resource: str, content: dict):
    return new_message(source=EDGE, group=GROUP_RESOURCE, operation=operation,
                       resource=resource, content=content)


async def _send_up(srv: ServerProcess, agent_dir: Path, messages: list, done) -> None:
    """Node A's real EdgeHub (its join's certificate and password) sends `messages` in order
    up its tunnel; returns once `done()` (the effect of the last one) holds."""
    creds = await _join(srv, agent_dir, "a")  # the stored certificate, as a restart uses it
    meta = MetaManager(str(agent_dir / "meta.db"))
    await meta.open()
    async with aiohttp.ClientSession() as session:
        hub = EdgeHub(server=srv.url, ssl_context=ssl_context(creds), meta=meta,
                      session=session, node_name="a",
                      headers={NODE_PASSWORD_HEADER: node_password(str(agent_dir))})
        hub.start()
        try:
            for msg in messages:
                await hub.send(msg)
            await asyncio.to_thread(wait_for, done, 30,
                                    what="node A's allowed write through the tunnel")
        finally:
            await hub.stop()
            await meta.close()


def test_tunnel_writes_get_the_node_authorizer_and_node_restriction(cluster):
    srv, configs = cluster
    b_status = srv.kubectl_json("get", "pod", "pb").get("status")
    stolen = {"phase": "Failed", "message": "written by node a"}
    messages = [
        _up(OP_UPDATE, "pods/default/pb/status", {"status": stolen}),
        _up(OP_UPDATE, "nodes//b/status", {"conditions": [{"type": "Ready", "status": "False"}]}),
        _up(OP_UPDATE, "leases/kube-node-lease/b", {"holderIdentity": "a"}),
        _up(OP_INSERT, "nodes//a", {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": "a", "labels": {"node-role.kubernetes.io/control-plane": "true"}}}),
        _up(OP_INSERT, "nodes//a", {"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": "a", "labels": {"site": "pole9"}}}),
        _up(OP_UPDATE, "pods/default/pa/status", {"status": {"phase": "Running",
                                                             "message": "by a"}}),
    ]

    def pa_written() -> bool:
        return (srv.kubectl_json("get", "pod", "pa").get("status") or {}).get("message") == "by a"
    asyncio.run(_send_up(srv, configs["a"].parent / "a", messages, pa_written))
    assert srv.kubectl_json("get", "pod", "pb").get("status") == b_status
    assert "conditions" not in (srv.kubectl_json("get", "node", "b").get("status") or {})
    assert srv.kubectl("get", "lease", "-n", "kube-node-lease", "b", check=False).returncode != 0
    labels = srv.kubectl_json("get", "node", "a")["metadata"]["labels"]
    assert "node-role.kubernetes.io/control-plane" not in labels, labels
    # the allowed registration: its own label, and the role the server gives an edge node
    assert labels["site"] == "pole9" and labels["node-role.kubernetes.io/edge"] == "", labels


def _device(name: str, node: str) -> str:
    return json.dumps({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
                       "metadata": {"name": name, "namespace": "default"},
                       "spec": {"deviceModelRef": {"name": "m"}, "nodeName": node}})


def test_node_lists_and_watches_only_its_own_devices(cluster):
    """The node-scoped Device list and watch the node authorizer allows (KubeEdge's edge
    lists its devices by spec.nodeName) works: the built-in CRD declares the field
    selectable, and node A sees its devices and no other's."""
    srv, configs = cluster
    wait_for(lambda: srv.kubectl("get", "devices", check=False).returncode == 0, 30, 0.2,
             "devices served")
    rv = json.loads(srv.kubectl("get", "--raw", "/apis/devices.kubeedge.io/v1beta1/devices")
                    .stdout)["metadata"]["resourceVersion"]
    for name, node in (("dev-a", "a"), ("dev-b", "b"), ("dev-a2", "a")):
        srv.kubectl("apply", "-f", "-", input=_device(name, node))
    out = as_node(configs["a"], "get", "devices", "-A", "--field-selector",
                  "spec.nodeName=a", "-o", "name")
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == ["device.devices.kubeedge.io/dev-a",
                                          "device.devices.kubeedge.io/dev-a2"]
    watch = as_node(configs["a"], "get", "--raw", "/apis/devices.kubeedge.io/v1beta1/devices?"
                    f"watch=true&timeoutSeconds=1&resourceVersion={rv}&"
                    "fieldSelector=spec.nodeName%3Da")
    assert watch.returncode == 0, watch.stderr
    events = [json.loads(line) for line in watch.stdout.splitlines()]
    assert {e["object"]["metadata"]["name"] for e in events} == {"dev-a", "dev-a2"}
    assert {e["type"] for e in events} <= {"ADDED", "MODIFIED"}
    refused = as_node(configs["a"], "get", "devices", "-A", "--field-selector",
                      "spec.nodeName=b")
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused.stderr
