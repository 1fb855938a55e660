"""The agent embedded in `k3py server` (no --disable-agent): the server's own node registers
as control-plane/master and runs pods on podman; a host without podman keeps the API up and
logs one error.

Uses tests/harness.py's ServerProcess minus --disable-agent; podman pods removed at teardown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.harness import ServerProcess, wait_for

pytestmark = pytest.mark.integration


class EmbeddedServer(ServerProcess):
    def command(self) -> list[str]:
        return [a for a in super().command() if a != "--disable-agent"]


def _remove_podman_pods(node: str) -> None:
    out = subprocess.run(["podman", "pod", "ps", "-q", "--filter",
                          f"label=io.k3py.node={node}"], capture_output=True, text=True)
    for pod_id in out.stdout.split():
        subprocess.run(["podman", "pod", "rm", "-f", "-t", "0", pod_id], capture_output=True)


def _podman_pods(node: str) -> list[str]:
    out = subprocess.run(["podman", "pod", "ps", "--format", "{{.Name}}", "--filter",
                          f"label=io.k3py.node={node}"], capture_output=True, text=True)
    return out.stdout.split()


def test_embedded_agent_runs_pods(tmp_path):
    root = Path(__file__).resolve().parents[2]
    subprocess.run(["sh", str(root / "airgap" / "build-test-image.sh"),
                    str(tmp_path / "busybox.tar")], check=True, capture_output=True)
    node = f"srv-{uuid.uuid4().hex[:6]}"
    srv = EmbeddedServer(tmp_path / "k3py", extra_args=["--node-name", node])
    try:
        srv.start()

        def ready():
            n = srv.kubectl_json("get", "node", node)
            conds = {c["type"]: c["status"] for c in n["status"].get("conditions", [])}
            return conds.get("Ready") == "True" and n
        n = wait_for(ready, 30, 0.3, f"node {node} Ready")
        labels = n["metadata"]["labels"]
        assert labels["node-role.kubernetes.io/control-plane"] == "true"
        assert labels["node-role.kubernetes.io/master"] == "true"
        assert "node-role.kubernetes.io/edge" not in labels
        assert "control-plane,master" in srv.kubectl("get", "node", node).stdout
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
               "spec": {"nodeName": node, "containers": [{
                   "name": "c", "image": "k3py.local/busybox:latest",
                   "imagePullPolicy": "IfNotPresent",
                   "command": ["sh", "-c", "echo embedded-ok; trap 'exit 0' TERM; "
                               "while true; do sleep 1; done"]}]}}
        srv.kubectl("apply", "-f", "-", input=json.dumps(pod))
        wait_for(lambda: " 1/1 " in srv.kubectl("get", "pod", "web").stdout and
                 "Running" in srv.kubectl("get", "pod", "web").stdout, 60, 0.5,
                 "pod Running 1/1")
        wait_for(lambda: "embedded-ok" in srv.kubectl("logs", "web").stdout, 20, 0.5, "logs")
        assert len(_podman_pods(node)) == 1
        srv.kubectl("delete", "pod", "web", timeout=60)
        assert _podman_pods(node) == []
    finally:
        srv.stop()
        _remove_podman_pods(node)


def test_no_podman_keeps_the_api_up(tmp_path):
    # a PATH holding this Python only: no podman
    node = f"srv-{uuid.uuid4().hex[:6]}"
    path = os.path.dirname(sys.executable)
    srv = EmbeddedServer(tmp_path / "k3py", extra_args=["--node-name", node],
                         env={"PATH": path})
    try:
        srv.start()
        assert "default" in srv.kubectl("get", "ns").stdout
        wait_for(lambda: "embedded agent did not start" in srv.log_path.read_text(), 10, 0.2,
                 "the embedded agent's error")
        log = srv.log_path.read_text()
        errors = [line for line in log.splitlines() if " ERROR " in line]
        assert len(errors) == 1, log
        assert "podman is not installed" in errors[0]
        assert "Traceback" not in log
        assert srv.kubectl("get", "node", node, check=False).returncode != 0
        assert srv.proc is not None and srv.proc.poll() is None
    finally:
        srv.stop()
        _remove_podman_pods(node)
