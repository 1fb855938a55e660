"""The agent embedded in `k3py server` (no --disable-agent): the server's own node registers
as control-plane/master and runs pods on podman; a host without podman keeps the API up and
logs one error.

Uses tests/harness.py's ServerProcess minus --disable-agent; podman pods removed at teardown."""

from __future__ import annotations

import json
import os
import sys
import uuid

import pytest

from tests.harness import wait_for
from tests.integration.agents import (
    IMAGE,
    EmbeddedServer,
    embedded_node,
    podman_pods,
    remove_podman_pods,
)

pytestmark = pytest.mark.integration


# the names other agent test modules imported from here before tests/integration/agents.py
_remove_podman_pods, _podman_pods = remove_podman_pods, podman_pods


def test_embedded_agent_runs_pods(tmp_path):
    with embedded_node(tmp_path, "srv", timeout=30) as srv:
        node = srv.node
        labels = srv.kubectl_json("get", "node", node)["metadata"]["labels"]
        assert labels["node-role.kubernetes.io/control-plane"] == "true"
        assert labels["node-role.kubernetes.io/master"] == "true"
        assert "node-role.kubernetes.io/edge" not in labels
        assert "control-plane,master" in srv.kubectl("get", "node", node).stdout
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
               "spec": {"nodeName": node, "containers": [{
                   "name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                   "command": ["sh", "-c", "echo embedded-ok; trap 'exit 0' TERM; "
                               "while true; do sleep 1; done"]}]}}
        srv.kubectl("apply", "-f", "-", input=json.dumps(pod))
        wait_for(lambda: " 1/1 " in srv.kubectl("get", "pod", "web").stdout and
                 "Running" in srv.kubectl("get", "pod", "web").stdout, 60, 0.5,
                 "pod Running 1/1")
        wait_for(lambda: "embedded-ok" in srv.kubectl("logs", "web").stdout, 20, 0.5, "logs")
        assert len(podman_pods(node)) == 1
        srv.kubectl("delete", "pod", "web", timeout=60)
        assert podman_pods(node) == []


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
        remove_podman_pods(node)
