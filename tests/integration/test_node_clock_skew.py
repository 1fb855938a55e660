"""A node whose clock is minutes behind, as a Raspberry Pi's before NTP sets it (it has no
RTC), against a real server: its Lease, renewed every 2 s with a renewTime five minutes in the
past, keeps it Ready over three grace periods, since the lifecycle controller judges a
heartbeat by when it saw the Lease change (upstream's probe time), not by the time the node
wrote; once the Lease stops changing, the node turns Unknown. kubectl, as admin, plays the node.

No timing is asserted: the window and the wait are generous bounds."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from tests.harness import ServerProcess, wait_for

pytestmark = pytest.mark.integration

GRACE = 15.0  # --node-monitor-grace-period: seven of the renewals below (kubectl may be slow)
RENEW_EVERY = 2.0
BEHIND = dt.timedelta(minutes=5)
UNREACHABLE = "node.kubernetes.io/unreachable"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = ServerProcess(tmp_path_factory.mktemp("skew"), extra_args=[
        "--kube-controller-manager-arg", f"node-monitor-grace-period={GRACE:g}s",
        "--kube-controller-manager-arg", "node-monitor-period=1s"])
    try:
        s.start()
        yield s
    finally:
        s.stop()


def _behind(micro: bool = False) -> str:
    """Now, as the node's clock tells it."""
    then = dt.datetime.now(dt.UTC) - BEHIND
    return then.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def _state(srv, name: str) -> tuple[str, list[str]]:
    """The node's Ready status and the keys of its taints."""
    node = srv.kubectl_json("get", "node", name)
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    return ready["status"], [t["key"] for t in (node.get("spec") or {}).get("taints") or []]


def _join(srv, name: str) -> None:
    """The Node with a Ready status posted once, and its Lease, all by the node's clock."""
    srv.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}))
    posted = _behind()
    srv.kubectl("patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(
        {"status": {"conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "kubelet is posting ready status", "lastHeartbeatTime": posted,
            "lastTransitionTime": posted}]}}))
    srv.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                 "renewTime": _behind(micro=True)}}))


def _renew(srv, name: str) -> None:
    srv.kubectl("patch", "lease", "-n", "kube-node-lease", name, "--type=merge", "-p",
                json.dumps({"spec": {"renewTime": _behind(micro=True)}}))


def test_a_node_whose_clock_is_behind_stays_ready_while_its_lease_changes(srv):
    name = "pi-behind"
    _join(srv, name)
    start = time.monotonic()  # the window goes well past the first grace after the start
    while (renewed := time.monotonic()) < start + 3 * GRACE:
        _renew(srv, name)
        assert _state(srv, name) == ("True", []), "a renewing node was marked unreachable"
        time.sleep(max(0.0, renewed + RENEW_EVERY - time.monotonic()))

    # the same node gone quiet: its Lease stays as it was
    wait_for(lambda: _state(srv, name) == ("Unknown", [UNREACHABLE]), 6 * GRACE, 1.0,
             f"node {name} Unknown and unreachable once its Lease stopped changing")
