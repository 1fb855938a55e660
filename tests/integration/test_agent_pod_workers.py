"""Pods on one node are started and stopped independently (the agent's pod workers): pods whose
containers ignore SIGTERM, deleted with a grace period, hold up no other pod's start, and each
is gone within its grace period (plus a bound) of its delete; a pod deleted while its start is
in flight leaves nothing behind.

One `k3py server` with its embedded agent for the module (real podman, the offline busybox test
image), driven with the real kubectl; the podman pods of its node are removed at teardown."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from tests.harness import wait_for
from tests.integration.agents import IMAGE, embedded_node, podman_pods

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman")]

N = 10          # old pods deleted, new pods created meanwhile
GRACE = 20      # the old pods' grace period (their containers ignore SIGTERM): longer than
                # the new pods take to start on a loaded 2-core machine (10 was not, in CI)
BOUND = 10.0    # SIGKILL, pod removal and the final delete after the grace period
IGNORES_TERM = "trap '' TERM; echo up; while true; do sleep 1; done"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with embedded_node(tmp_path_factory.mktemp("workers"), "pw", timeout=30) as s:
        yield s


def _pod(srv, name: str, script: str, grace: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"t": "pw"}},
            "spec": {"nodeName": srv.node, "terminationGracePeriodSeconds": grace,
                     "containers": [{"name": "c", "image": IMAGE,
                                     "imagePullPolicy": "IfNotPresent",
                                     "command": ["sh", "-c", script]}]}}


def _apply(srv, pods: list[dict]) -> None:
    srv.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(p) for p in pods))


def _pods(srv, label: str = "t=pw") -> dict[str, dict]:
    return {p["metadata"]["name"]: p
            for p in srv.kubectl_json("get", "pods", "-l", label)["items"]}


def _running(p: dict | None) -> bool:
    st = (p or {}).get("status") or {}
    return st.get("phase") == "Running" and all(
        c.get("ready") for c in st.get("containerStatuses") or [{}])


def _killing_sent(srv, name: str) -> bool:
    """The agent began stopping the pod (its Killing Event is up)."""
    events = srv.kubectl_json("get", "events", "--field-selector",
                              f"involvedObject.name={name}")["items"]
    return any(e.get("reason") == "Killing" for e in events)


def _running_containers(node: str) -> set[str]:
    """Names of the node's containers running in podman."""
    out = subprocess.run(["podman", "ps", "--format", "{{.Names}}", "--filter",
                          f"label=io.k3py.node={node}"], capture_output=True, text=True)
    return set(out.stdout.split())


def test_pods_stopping_through_their_grace_hold_up_no_other_pod(srv):
    old = [f"old-{i}" for i in range(N)]
    new = [f"new-{i}" for i in range(N)]
    _apply(srv, [_pod(srv, n, IGNORES_TERM, GRACE) for n in old])
    wait_for(lambda: all(_running(_pods(srv).get(n)) for n in old), 60, 0.3,
             "the old pods Running")

    deleted_at = time.monotonic()
    srv.kubectl("delete", "pod", *old, "--wait=false")
    # every old pod is being stopped (so a pass listing podman meets their stops) before the
    # new pods exist
    wait_for(lambda: all(_killing_sent(srv, n) for n in old), 20, 0.3, "Killing Events")
    _apply(srv, [_pod(srv, n, "echo up; exec sleep 3600", 1) for n in new])

    def new_running() -> dict[str, dict] | None:
        ps = _pods(srv)
        return ps if all(_running(ps.get(n)) for n in new) else None
    ps = wait_for(new_running, GRACE + BOUND, 0.2, "the new pods Running")
    # the new pods run while every old pod is still Terminating, its container still up
    # (it ignores SIGTERM): they did not wait for any old pod's grace period
    running = _running_containers(srv.node)
    for n in old:
        assert ps[n]["metadata"].get("deletionTimestamp"), ps[n]["metadata"]
        assert any(c.startswith(f"default_{n}_c_") for c in running), (n, sorted(running))

    # each old pod is gone within its grace period (plus a bound) of the delete: they were
    # stopped in parallel, not one grace period after another
    gone_at: dict[str, float] = {}

    def all_gone() -> bool:
        now = time.monotonic()
        left = _pods(srv)
        for n in old:
            if n not in left:
                gone_at.setdefault(n, now)
        return len(gone_at) == N
    wait_for(all_gone, GRACE + BOUND + 10, 0.2, "the old pods gone")
    for n, at in gone_at.items():
        assert at - deleted_at <= GRACE + BOUND, (n, at - deleted_at)
    assert all(_running(p) for p in _pods(srv).values())  # the new ones never stopped
    assert sorted(p for p in podman_pods(srv.node) if "_old-" in p) == []
    srv.kubectl("delete", "pod", *new, "--wait=false")
    wait_for(lambda: not _pods(srv), 30, 0.3, "the new pods gone")


def test_a_pod_deleted_while_it_starts_leaves_nothing(srv):
    names = [f"brief-{i}" for i in range(5)]
    pods = [_pod(srv, n, "echo up; exec sleep 3600", 1) for n in names]
    for p in pods:
        p["metadata"]["labels"] = {"t": "brief"}
    _apply(srv, pods)
    srv.kubectl("delete", "pod", *names, "--wait=false")
    wait_for(lambda: not _pods(srv, "t=brief"), 30, 0.3, "the pods gone")
    wait_for(lambda: not [p for p in podman_pods(srv.node) if "_brief-" in p], 10, 0.3,
             "their podman pods gone")
