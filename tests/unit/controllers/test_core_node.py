"""NodeLifecycleController against a real Registry: a node whose lease goes stale turns
Ready=Unknown with the unreachable taint, which goes once the lease is renewed again; its pods
stay (edge autonomy) unless --node-eviction-timeout turns taint-based eviction on. Staleness is
judged by when the controller saw the heartbeats change, so a node whose clock is minutes
behind stays Ready while it renews its Lease."""

from __future__ import annotations

import asyncio
import datetime as dt
from types import SimpleNamespace

import pytest

from k3py.api.objects import now_rfc3339
from k3py.server.controllers.node import (
    UNREACHABLE_TAINT,
    NodeHealth,
    NodeLifecycleController,
    desired_taint,
    eviction_delay,
    mark_unknown,
    observe,
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


def test_mark_unknown_leaves_other_writers_conditions():
    foreign = {"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated"}
    node = {"status": {"conditions": [foreign, {"type": "DiskPressure", "status": "False"}]}}
    out = mark_unknown(node, "t")
    assert out["status"]["conditions"][0] == foreign
    assert [(c["type"], c["status"]) for c in out["status"]["conditions"][1:]] == \
        [("DiskPressure", "Unknown"), ("Ready", "Unknown")]
    assert mark_unknown({"status": {"conditions": [foreign]}}, "t")["status"]["conditions"] \
        == [foreign, {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                      "message": out["status"]["conditions"][1]["message"],
                      "lastTransitionTime": "t", "lastHeartbeatTime": None}]


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


def test_eviction_delay_follows_tolerations():
    assert eviction_delay({"spec": {}}, 60) == 60
    default = {"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute",
               "tolerationSeconds": 300}
    assert eviction_delay({"spec": {"tolerations": [default]}}, 60) == 60
    assert eviction_delay({"spec": {"tolerations": [{**default, "tolerationSeconds": 5}]}},
                          60) == 5
    forever = {"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute"}
    assert eviction_delay({"spec": {"tolerations": [forever]}}, 60) is None
    assert eviction_delay({"spec": {"tolerations": [{"operator": "Exists"}]}}, 60) is None
    other = {"key": "x", "operator": "Exists"}
    assert eviction_delay({"spec": {"tolerations": [other]}}, 60) == 60


async def _stale_node_with_pods(env, name: str) -> None:
    reg = env.registry
    await reg.create(env.res("nodes"), None, {"metadata": {"name": name}})
    await reg.create(env.res("leases", "coordination.k8s.io"), "kube-node-lease", {
        "metadata": {"name": name}, "spec": {"holderIdentity": name,
                                             "renewTime": now_rfc3339(micro=True)}})
    c = [{"name": "c", "image": "busybox"}]
    await reg.create(env.res("pods"), "default", {
        "metadata": {"name": "plain"}, "spec": {"nodeName": name, "containers": c}})
    await reg.create(env.res("pods"), "default", {
        "metadata": {"name": "tolerant"}, "spec": {"nodeName": name, "containers": c,
                                                   "tolerations": [{"operator": "Exists"}]}})


async def test_pods_of_an_unreachable_node_stay_by_default(env):
    env.ctx.extra.update(node_monitor_grace_period=0.3, node_monitor_period=0.1)
    await env.start(NodeLifecycleController)
    await _stale_node_with_pods(env, "edge")

    async def unknown():
        n = await env.registry.get(env.res("nodes"), None, "edge")
        return [(t["key"], t["effect"]) for t in (n.get("spec") or {}).get("taints") or []]
    assert await eventually(unknown, timeout=10.0) == [(UNREACHABLE_TAINT, "NoSchedule")]
    await asyncio.sleep(1.0)  # well past any eviction: none happens
    assert {p["metadata"]["name"] for p in await env.all("pods")} == {"plain", "tolerant"}


async def test_eviction_timeout_evicts_pods_that_do_not_tolerate(env):
    env.ctx.extra.update(node_monitor_grace_period=0.3, node_monitor_period=0.1)
    env.ctx.config = SimpleNamespace(node_eviction_timeout=0.5)
    await env.start(NodeLifecycleController)
    await _stale_node_with_pods(env, "edge")

    async def evicted():  # marked for deletion: Terminating until the node confirms
        names = {p["metadata"]["name"] for p in await env.all("pods")
                 if not p["metadata"].get("deletionTimestamp")}
        return names == {"tolerant"} and names
    await eventually(evicted, timeout=10.0)
    n = await env.registry.get(env.res("nodes"), None, "edge")
    assert {(t["key"], t["effect"]) for t in n["spec"]["taints"]} == {
        (UNREACHABLE_TAINT, "NoSchedule"), (UNREACHABLE_TAINT, "NoExecute")}
    assert ("plain", "Normal", "TaintManagerEviction", "Marking for deletion Pod default/plain") \
        in await env.events()


def _lease(renew_time: str) -> dict:
    return {"spec": {"holderIdentity": "n", "renewTime": renew_time}}


def _node(heartbeat: str | None) -> dict:
    ready = {"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat}
    return {"metadata": {"name": "n"}, "status": {"conditions": [ready]}}


def test_observe_counts_a_change_seen_not_the_time_written():
    first = observe(None, _node("2020-01-01T00:00:00Z"), _lease("2020-01-01T00:00:00.1Z"), 5.0)
    assert first == NodeHealth("2020-01-01T00:00:00.1Z", "2020-01-01T00:00:00Z", 5.0)
    # nothing moved: the record, and its probe time, stay
    assert observe(first, _node("2020-01-01T00:00:00Z"), _lease("2020-01-01T00:00:00.1Z"),
                   50.0) is first
    # a renewal years in the past, or earlier than the one seen (a clock set back), is one
    assert observe(first, _node("2020-01-01T00:00:00Z"), _lease("2019-06-01T00:00:00.2Z"),
                   50.0).probed == 50.0
    assert observe(first, _node("2020-01-01T00:00:10Z"), _lease("2020-01-01T00:00:00.1Z"),
                   50.0) == NodeHealth("2020-01-01T00:00:00.1Z", "2020-01-01T00:00:10Z", 50.0)
    # a Lease gone is no heartbeat; one back with a new renewal is
    assert observe(first, _node("2020-01-01T00:00:00Z"), None, 50.0) is first
    assert observe(first, _node("2020-01-01T00:00:00Z"), _lease("2020-01-01T00:01:00Z"),
                   60.0).probed == 60.0
    # a node without a Ready condition, with a Lease only
    bare = {"metadata": {"name": "n"}}
    assert observe(None, bare, _lease("t1"), 1.0) == NodeHealth("t1", None, 1.0)


def _long_ago() -> str:
    """A renewTime as a node whose clock is ten minutes behind writes it now."""
    then = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    return then.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_a_node_whose_clock_is_behind_stays_ready_while_it_renews(env):
    env.ctx.extra.update(node_monitor_grace_period=3.0, node_monitor_period=0.2)
    controller, = await env.start(NodeLifecycleController)
    reg, nodes = env.registry, env.res("nodes")
    leases = env.res("leases", "coordination.k8s.io")
    await reg.create(nodes, None, {"metadata": {"name": "pi"}})
    posted = _long_ago()[:19] + "Z"  # a status posted once, ten minutes ago by its clock
    await reg.update_with(nodes, None, "pi", lambda n: {**n, "status": {"conditions": [
        {"type": "Ready", "status": "True", "lastHeartbeatTime": posted,
         "lastTransitionTime": posted}]}}, subresource="status")
    await reg.create(leases, "kube-node-lease", {"metadata": {"name": "pi"},
                                                 "spec": {"renewTime": _long_ago()}})

    def renew(cur: dict) -> dict:
        cur["spec"]["renewTime"] = _long_ago()
        return cur

    async def state() -> tuple[str, list[str]]:
        n = await reg.get(nodes, None, "pi")
        ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"][0]
        return ready["status"], [t["key"] for t in (n.get("spec") or {}).get("taints") or []]
    loop = asyncio.get_running_loop()
    until = loop.time() + 6.0  # twice the grace period after the start, renewed every 0.1 s
    while loop.time() < until:
        await reg.update_with(leases, "kube-node-lease", "pi", renew)
        assert await state() == ("True", [])
        await asyncio.sleep(0.1)

    # a Lease that stops changing, its time as old as ever, is a node gone quiet
    async def unreachable():
        return await state() == ("Unknown", [UNREACHABLE_TAINT])
    await eventually(unreachable, timeout=10.0, what="node pi Unknown")
    assert "pi" in controller._health
    await reg.delete(nodes, None, "pi")
    await eventually(lambda: "pi" not in controller._health, timeout=5.0,
                     what="the deleted node's record dropped")
