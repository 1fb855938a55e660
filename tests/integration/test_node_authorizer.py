"""A stolen node's credential against a real server: two node certificates obtained by the
real join (k3py.agent.join, the same code `k3py agent` runs), then the real kubectl with each.

Node A gets its own Node, the pods bound to it (by name, or listed with
--field-selector spec.nodeName=a) and the secret its pod uses; it is refused (Forbidden) the
secret only node B's pod uses, all secrets or pods of the cluster, node B's Node and pods, and
writes outside its own pods (create a secret, delete B's pod, bind itself cluster-admin),
and NodeRestriction keeps it from giving itself restricted labels or changing its taints."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import aiohttp
import pytest

from k3py.agent.join import join
from tests.harness import KUBECTL, ServerProcess

pytestmark = pytest.mark.integration


def _pod(name: str, node: str, secret: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "volumes": [{"name": "s", "secret": {
                "secretName": secret}}],
                     "containers": [{"name": "c", "image": "busybox"}]}}


def _node_kubeconfig(srv: ServerProcess, tmp: Path, node: str) -> Path:
    agent_dir = tmp / node

    async def get_cert():
        async with aiohttp.ClientSession() as session:
            return await join(session, srv.url, srv.join_token(), node, str(agent_dir))
    creds = asyncio.run(get_cert())
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
