"""A real `k3py agent` process joining a real server: the node registers Ready with its lease,
a wrong token or a wrong CA hash is one error line and exit 1, and a pod runs on podman.

Uses tests/harness.py's ServerProcess; the agent's podman pods are removed at teardown."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.harness import clean_env, wait_for
from tests.integration.agents import build_test_image, podman_pods, remove_podman_pods

pytestmark = pytest.mark.integration

pytest.importorskip("k3py.cli.agent")  # the CLI lands with the server work


@pytest.fixture
def agent_procs():
    procs: list[tuple[subprocess.Popen, str]] = []
    yield procs
    for proc, _ in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    for node in {node for _, node in procs}:
        remove_podman_pods(node)  # and the node's pod network, which would hold its subnet


def test_wrong_token_and_wrong_ca_fail_fast(server, tmp_path):
    good = server.join_token()
    wrong_secret = good.rsplit(":", 1)[0] + ":nope"
    wrong_ca = "K10" + "0" * 64 + "::server:" + good.rsplit(":", 1)[1]
    for token, needle in ((wrong_secret, "rejected the join token"),
                          (wrong_ca, "does not match the token")):
        out = subprocess.run(server.agent_command(tmp_path / uuid.uuid4().hex, "n", token=token),
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 1
        assert needle in out.stderr


def test_agent_registers_node_and_runs_pod(server, tmp_path, agent_procs):
    build_test_image(tmp_path / "busybox.tar")
    node = f"edge-{uuid.uuid4().hex[:6]}"
    data = tmp_path / "agent"
    log = open(tmp_path / "agent.log", "wb")
    proc = subprocess.Popen(server.agent_command(data, node), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, env=clean_env())
    agent_procs.append((proc, node))

    def ready():
        n = server.kubectl_json("get", "node", node)
        conds = {c["type"]: c["status"] for c in n["status"].get("conditions", [])}
        return conds.get("Ready") == "True" and n
    n = wait_for(ready, 30, 0.3, f"node {node} Ready")
    assert n["metadata"]["labels"]["node-role.kubernetes.io/edge"] == ""
    assert n["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("podman://")
    lease = server.kubectl_json("get", "lease", "-n", "kube-node-lease", node)
    assert lease["spec"]["holderIdentity"] == node
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello"},
           "spec": {"nodeName": node, "containers": [{
               "name": "c", "image": "k3py.local/busybox:latest",
               "imagePullPolicy": "IfNotPresent",
               "command": ["sh", "-c", "echo hi-from-k3py; trap 'exit 0' TERM; "
                           "while true; do sleep 1; done"]}]}}
    server.kubectl("apply", "-f", "-", input=json.dumps(pod))
    try:
        wait_for(lambda: server.kubectl_json("get", "pod", "hello")["status"].get("phase")
                 == "Running", 60, 0.5, "pod Running")
        wait_for(lambda: " 1/1 " in server.kubectl("get", "pod", "hello").stdout, 20, 0.5,
                 "pod Ready 1/1 in kubectl get pods")
        uid = server.kubectl_json("get", "pod", "hello")["metadata"]["uid"]
        assert podman_pods(node) == [f"default_hello_{uid[:8]}"]
        wait_for(lambda: "hi-from-k3py" in server.kubectl("logs", "hello").stdout, 20, 0.5,
                 "kubectl logs through the tunnel")
        # kubectl exec (websocket v5.channel.k8s.io) through the tunnel: streams kept apart,
        # exit code propagated, stdin piped
        out = server.kubectl("exec", "hello", "--", "sh", "-c", "echo out; echo err >&2; exit 3",
                             check=False)
        assert (out.returncode, out.stdout) == (3, "out\n")
        assert "err\n" in out.stderr
        out = server.kubectl("exec", "-i", "hello", "--", "cat", input="piped\n")
        assert out.stdout == "piped\n"
        assert server.kubectl("exec", "hello", "--", "hostname").stdout.strip() == "hello"
        # graceful deletion: the agent stops the containers (SIGTERM is trapped, so this is
        # quick) and then deletes the object; kubectl waits for that
        t0 = time.monotonic()
        server.kubectl("delete", "pod", "hello", timeout=60)
        assert time.monotonic() - t0 < 20
        assert server.kubectl("get", "pod", "hello", check=False).returncode != 0
        assert podman_pods(node) == []
    finally:
        server.kubectl("delete", "pod", "hello", "--wait=false", "--ignore-not-found",
                       check=False)


def test_duplicate_node_name_is_refused_until_the_node_is_deleted(server, tmp_path, agent_procs):
    """K3s-style node passwords: a second machine (another data dir) asking for a node name in
    use gets one clear line and exit 1; the first machine is accepted again after a restart
    (even without its cached certificate); `kubectl delete node` frees the name, and once the
    second machine has it, the first one's old certificate no longer opens a tunnel."""
    node = f"dup-{uuid.uuid4().hex[:6]}"
    env = clean_env()

    def start(data: Path) -> subprocess.Popen:
        log = open(tmp_path / f"{data.name}.log", "ab")
        proc = subprocess.Popen(server.agent_command(data, node), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
        agent_procs.append((proc, node))
        return proc

    def ready() -> bool:
        out = server.kubectl("get", "node", node, "-o", "json", check=False)
        if out.returncode != 0:
            return False
        conds = {c["type"]: c for c in json.loads(out.stdout)["status"].get("conditions", [])}
        return conds.get("Ready", {}).get("status") == "True"

    def stop(proc: subprocess.Popen) -> None:
        proc.terminate()
        proc.wait(15)

    first, second = tmp_path / "first", tmp_path / "second"
    a = start(first)
    wait_for(ready, 30, 0.3, f"node {node} Ready")
    out = subprocess.run(server.agent_command(second, node), capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f'node name "{node}" is already used by another machine' in lines[0]
    assert "--node-name" in lines[0] and "--with-node-id" in lines[0]
    assert a.poll() is None

    # the same machine restarts, even having lost its certificate: accepted
    stop(a)
    (first / "agent" / "client-node.crt").unlink()
    a = start(first)
    wait_for(lambda: (first / "agent" / "client-node.crt").exists(), 30, 0.2,
             "a new certificate for the first machine")
    wait_for(ready, 30, 0.3, f"node {node} Ready again")
    assert a.poll() is None

    # the Node owns its password Secret: deleting the Node deletes it (garbage collector)
    secret = f"{node}.node-password.k3py"
    uid = server.kubectl_json("get", "node", node)["metadata"]["uid"]
    refs = server.kubectl_json("get", "secret", "-n", "kube-system", secret)["metadata"]
    assert refs["ownerReferences"] == [{"apiVersion": "v1", "kind": "Node", "name": node,
                                        "uid": uid}]

    # the node is deleted: its name is free for the second machine
    stop(a)
    server.kubectl("delete", "node", node)
    wait_for(lambda: server.kubectl("get", "secret", "-n", "kube-system", secret,
                                    check=False).returncode != 0, 30, 0.3, "secret deleted")
    b = start(second)
    wait_for(lambda: b.poll() is None and ready(), 30, 0.3, f"node {node} Ready for the second")
    assert b.poll() is None
    uid = server.kubectl_json("get", "node", node)["metadata"]["uid"]
    wait_for(lambda: [r["uid"] for r in server.kubectl_json(
        "get", "secret", "-n", "kube-system", secret)["metadata"].get("ownerReferences", [])]
        == [uid], 30, 0.3, "the new Node owns the new Secret")
    # the first machine comes back with its old certificate: its tunnel is refused, exit 1
    a = start(first)
    assert a.wait(30) == 1
    last = (tmp_path / "first.log").read_text().strip().splitlines()[-1]
    assert last.startswith("k3py: error: the server refused this node's tunnel (409)"), last
    assert "--node-name" in last
    assert b.poll() is None and ready()
