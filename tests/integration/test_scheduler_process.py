"""The scheduler's own process beside the server: it binds pods as user system:kube-scheduler,
comes back when it dies, and does not outlive a server killed with SIGKILL."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.harness import wait_for

pytestmark = pytest.mark.integration

NODE = """
apiVersion: v1
kind: Node
metadata: {name: n-one, labels: {kubernetes.io/hostname: n-one}}
"""


def pod_yaml(name: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  containers: [{{name: c, image: busybox}}]
"""


def scheduler_pids(server_pid: int) -> list[int]:
    """The server's children running `k3py scheduler-process`."""
    pids = []
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if b"scheduler-process" in cmdline:
                pids.append(int(pid))
    return pids


def alive(pid: int) -> bool:
    """Running (not a zombie waiting for its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def node_of(server, name: str) -> str:
    return server.kubectl_json("get", "pod", name)["spec"].get("nodeName") or ""


def test_pods_are_bound_by_the_scheduler_process_which_comes_back(fresh_server):
    srv = fresh_server.start()
    srv.kubectl("apply", "-f", "-", input=NODE)
    first = wait_for(lambda: scheduler_pids(srv.proc.pid), 30, 0.2, "the scheduler process")
    srv.kubectl("apply", "-f", "-", input=pod_yaml("before"))
    wait_for(lambda: node_of(srv, "before") == "n-one", 30, 0.2, "pod before bound")
    events = srv.kubectl("get", "events", "--field-selector",
                         "involvedObject.name=before,reason=Scheduled", "-o",
                         "jsonpath={.items[*].source.component}").stdout
    assert events == "default-scheduler"

    os.kill(first[0], signal.SIGKILL)
    second = wait_for(lambda: [p for p in scheduler_pids(srv.proc.pid) if p != first[0]],
                      30, 0.2, "the scheduler process started again")
    srv.kubectl("apply", "-f", "-", input=pod_yaml("after"))
    wait_for(lambda: node_of(srv, "after") == "n-one", 30, 0.2, "pod after bound")
    assert alive(second[0])
    assert "the scheduler process exited" in srv.log_path.read_text()


def test_the_scheduler_process_ends_with_a_killed_server(fresh_server):
    srv = fresh_server.start()
    child = wait_for(lambda: scheduler_pids(srv.proc.pid), 30, 0.2, "the scheduler process")
    os.kill(srv.proc.pid, signal.SIGKILL)  # the server alone, not its process group
    srv.proc.wait()
    wait_for(lambda: not alive(child[0]), 15, 0.1, "the scheduler process to exit")


def test_the_scheduler_user_may_bind_but_not_read_secrets(server):
    can = lambda *a: server.kubectl("auth", "can-i", *a, "--as", "system:kube-scheduler",  # noqa: E731
                                    check=False).stdout.strip()
    assert can("create", "pods", "--subresource=binding") == "yes"
    assert can("update", "pods", "--subresource=status") == "yes"
    assert can("watch", "nodes") == "yes"
    assert can("get", "secrets") == "no"
