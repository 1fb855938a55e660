"""NodeLifecycleController against a real Registry: a node whose lease goes stale turns
Ready=Unknown with the unreachable taint, which goes once the lease is renewed again."""

from __future__ import annotations

import pytest

from k3py.api.objects import now_rfc3339
from k3py.server.controllers.node import (
    UNREACHABLE_TAINT,
    NodeLifecycleController,
    desired_taint,
    mark_unknown,
)
from tests.unit.conftest import eventually

pytestmark = pytest.mark.unit


@pytest.fixture
async def cluster(env):
    env.ctx.extra.update(node_monitor_grace_period=0.6, node_monitor_period=0.2)
    await env.start(NodeLifecycleController)
    return env.registry


def test_mark_unknown_and_desired_taint():
    node = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    out = mark_unknown(node, "t")
    assert out["status"]["conditions"][0]["status"] == "Unknown"
    assert out["status"]["conditions"][0]["reason"] == "NodeStatusUnknown"
    assert desired_taint(out) == UNREACHABLE_TAINT
    assert mark_unknown(out, "t") is None
    assert desired_taint({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}) \
        is None


async def test_stale_lease_marks_unknown_and_fresh_lease_clears(cluster):
    reg = cluster
    nodes = reg.resources.find("", "nodes")
    leases = reg.resources.find("coordination.k8s.io", "leases")
    await reg.create(nodes, None, {"metadata": {"name": "bare"}})
    await reg.create(nodes, None, {"metadata": {"name": "n1"}})
    await reg.create(leases, "kube-node-lease", {"metadata": {"name": "n1"}, "spec": {
        "holderIdentity": "n1", "renewTime": now_rfc3339(micro=True)}})

    async def tainted():
        n = await reg.get(nodes, None, "n1")
        return any(t["key"] == UNREACHABLE_TAINT for t in (n.get("spec") or {}).get("taints") or []) and n
    n = await eventually(tainted, timeout=10.0)
    ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"][0]
    assert ready["status"] == "Unknown"
    assert ready["message"] == "Kubelet stopped posting node status."

    def renew(cur):
        cur["spec"]["renewTime"] = now_rfc3339(micro=True)
        return cur

    def ready_true(cur):
        cur["status"]["conditions"] = [{"type": "Ready", "status": "True",
                                        "lastHeartbeatTime": now_rfc3339()}]
        return cur
    await reg.update_with(leases, "kube-node-lease", "n1", renew)
    await reg.update_with(nodes, None, "n1", ready_true, subresource="status")

    async def clean():
        n = await reg.get(nodes, None, "n1")
        return not (n.get("spec") or {}).get("taints")
    await eventually(clean, timeout=0.5)
    bare = await reg.get(nodes, None, "bare")
    assert not (bare.get("spec") or {}).get("taints")
    assert not (bare.get("status") or {}).get("conditions")
