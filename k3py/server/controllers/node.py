"""NodeLifecycleController: marks nodes whose kubelet stopped heartbeating Ready=Unknown and
taints them node.kubernetes.io/unreachable:NoSchedule; the taint goes when heartbeats resume.

A heartbeat is judged by when this controller saw it, on its own monotonic clock, never by the
time the node wrote into it: a node's clock may be far off (a Raspberry Pi has no RTC and boots
with a wrong time until NTP sets it), and a Lease renewed every 10 s by a node whose clock is a
minute behind is as alive as any. Upstream's controller does the same (its nodeHealthMap): per
node it keeps the Lease and the Ready condition it saw last and a probe time, its own clock's
time when it saw one of them move; the probe time becomes "now" when the Ready condition's
lastHeartbeatTime differs from the one kept, or the Lease's renewTime is later than the one
kept; the node is marked Unknown once now is past the probe time plus the grace period
(--node-monitor-grace-period). A node it has not seen before (every node, after a controller
start or a new leader) is given its probe time when first seen, so each has a full grace period
to check in (upstream gives a node that never posted a Ready condition its creation time and a
longer startup grace instead; k3py has one grace period). Here a renewTime that changes either
way counts (an edge clock that NTP sets back still beats), and a Lease that goes away is not a
heartbeat. What is kept is one small record per node, dropped with the Node; controllers run
on one server at a time (the kube-controller-manager Lease), and a new leader's controller
starts with no record.

Pods of an unreachable node are kept by default (KubeEdge's edge autonomy: the node goes on
running them offline). `--node-eviction-timeout T` (> 0) turns eviction on, as upstream's
taint-based eviction: the node also gets the NoExecute taint, and each of its pods is deleted
T seconds after the taint was added, or after its own tolerationSeconds for that taint if
shorter (the 300 s default tolerations included); a toleration without tolerationSeconds
(DaemonSet pods) keeps the pod. Controllers then recreate evicted pods on other nodes.

Nodes with neither a Lease nor conditions (created through the API for tests) are left alone."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import time
from dataclasses import dataclass

from k3py.api.objects import now_rfc3339, parse_time
from k3py.server.controllers.base import NODE_INDEX, Controller, ControllerContext, pod_node
from k3py.server.controllers.workloads_common import get_condition

__all__ = ["NodeLifecycleController", "UNREACHABLE_TAINT", "NOT_READY_TAINT", "NodeHealth",
           "observe", "desired_taint", "mark_unknown", "eviction_delay"]

log = logging.getLogger("k3py.controllers.node")

UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
LEASE_NS = "kube-node-lease"
UNKNOWN_REASON = "NodeStatusUnknown"
UNKNOWN_MESSAGE = "Kubelet stopped posting node status."
MONITOR_PERIOD = 5.0


def _ready(node: dict) -> dict | None:
    return get_condition(node, "Ready")


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """What the controller last saw of one node's heartbeats, and when it last saw one."""

    renew_time: str | None  # the Lease's spec.renewTime, as the node wrote it
    heartbeat: str | None   # the Ready condition's lastHeartbeatTime, as the node wrote it
    probed: float           # the controller's monotonic time of the last change seen


def observe(seen: NodeHealth | None, node: dict, lease: dict | None, now: float) -> NodeHealth:
    """The node's record after looking at its Node and Lease at `now` (monotonic): a node not
    seen before, a renewTime that changed or a Ready lastHeartbeatTime that changed is a
    heartbeat at `now`, whatever time the node wrote; a Lease gone is none."""
    renew_time = (lease.get("spec") or {}).get("renewTime") if lease is not None else None
    heartbeat = (_ready(node) or {}).get("lastHeartbeatTime")
    if seen is None or heartbeat != seen.heartbeat or (
            renew_time is not None and renew_time != seen.renew_time):
        return NodeHealth(renew_time, heartbeat, now)
    return seen


def desired_taint(node: dict) -> str | None:
    """The lifecycle NoSchedule taint the node's Ready condition calls for."""
    ready = _ready(node)
    if ready is None:
        return None
    if ready.get("status") == "Unknown":
        return UNREACHABLE_TAINT
    if ready.get("status") == "False":
        return NOT_READY_TAINT
    return None


# the conditions a node's agent (upstream: its kubelet) posts, which the controller marks
# Unknown when the node falls silent; another writer's (a network plugin's NetworkUnavailable,
# node-problem-detector's) stay as they are, as upstream's controller leaves them
KUBELET_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")


def mark_unknown(node: dict, now: str) -> dict | None:
    """The agent's conditions to Unknown, a Ready added if missing (status write); None when
    already so."""
    status = node.setdefault("status", {})
    conds = list(status.get("conditions") or [])
    if not any(c.get("type") == "Ready" for c in conds):
        conds.append({"type": "Ready"})
    changed = False
    out = []
    for c in conds:
        c = dict(c)
        if c.get("type") in KUBELET_CONDITIONS and c.get("status") != "Unknown":
            changed = True
            c["status"] = "Unknown"
            c["reason"] = UNKNOWN_REASON
            c["message"] = UNKNOWN_MESSAGE
            c["lastTransitionTime"] = now
            c.setdefault("lastHeartbeatTime", None)
        out.append(c)
    if not changed:
        return None
    status["conditions"] = out
    return node


def _taints_for(node: dict, want: str | None, now: str, no_execute: bool = False
                ) -> list[dict] | None:
    """The node's taints with the lifecycle ones made `want`:NoSchedule (and `want`:NoExecute
    when evicting); None when they already are. Pure: `node` may be the informer's copy."""
    taints = (node.get("spec") or {}).get("taints") or []
    ours = (UNREACHABLE_TAINT, NOT_READY_TAINT)
    effects = ("NoSchedule", "NoExecute") if no_execute else ("NoSchedule",)
    wanted = {(want, e) for e in effects} if want else set()
    kept = [t for t in taints if t.get("key") not in ours or
            (t.get("key"), t.get("effect")) in wanted]
    for key, effect in sorted(wanted):
        if not any(t.get("key") == key and t.get("effect") == effect for t in kept):
            kept.append({"key": key, "effect": effect, "timeAdded": now})
    return None if kept == taints else kept


def _set_taints(node: dict, want: str | None, now: str, no_execute: bool = False
                ) -> dict | None:
    """`node` with the lifecycle taints `_taints_for` gives; None when they already are."""
    kept = _taints_for(node, want, now, no_execute)
    if kept is None:
        return None
    spec = node.setdefault("spec", {})
    if kept:
        spec["taints"] = kept
    else:
        spec.pop("taints", None)
    return node


def _tolerates(t: dict, key: str, effect: str) -> bool:
    if t.get("effect") not in (None, "", effect):
        return False
    if (t.get("operator") or "Equal") == "Exists":
        return not t.get("key") or t.get("key") == key
    return t.get("key") == key and not t.get("value")


def eviction_delay(pod: dict, timeout: float, key: str = UNREACHABLE_TAINT) -> float | None:
    """Seconds after the `key`:NoExecute taint at which the pod is evicted; None = never."""
    for t in (pod.get("spec") or {}).get("tolerations") or []:
        if _tolerates(t, key, "NoExecute"):
            seconds = t.get("tolerationSeconds")
            if seconds is None:
                return None
            return min(timeout, max(0.0, float(seconds)))
    return timeout


class NodeLifecycleController(Controller):
    name = "node-lifecycle-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.grace = float(ctx.extra.get("node_monitor_grace_period", 40))
        self.period = float(ctx.extra.get("node_monitor_period", MONITOR_PERIOD))
        self.evict_after = ctx.config.node_eviction_timeout
        self._health: dict[str, NodeHealth] = {}  # node name -> what was seen of it
        self._ticker: asyncio.Task | None = None

    def setup(self) -> None:
        self.nodes = self.ctx.informers.informer("", "nodes")
        self.nodes.add_handler(self._on_node)
        try:
            self.leases = self.ctx.informers.informer("coordination.k8s.io", "leases")
            self.leases.add_handler(self._on_lease)
        except KeyError:
            self.leases = None
        if self.evict_after > 0:
            self.pods = self.ctx.informers.informer("", "pods")
            self.pods.add_index(NODE_INDEX, pod_node)

    def _on_node(self, etype: str, old: dict | None, new: dict | None) -> None:
        name = ((new or old or {}).get("metadata") or {}).get("name") or ""
        if etype == "DELETED":
            self._health.pop(name, None)  # what was seen of a node goes with it
        elif name:
            self.enqueue(name)

    def _on_lease(self, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new if new is not None else old
        md = (obj or {}).get("metadata") or {}
        if md.get("namespace") == LEASE_NS and etype != "DELETED":
            self.enqueue(md.get("name"))

    async def start(self) -> None:
        await super().start()
        self._ticker = asyncio.create_task(self._tick(), name="node-lifecycle-monitor")

    async def stop(self) -> None:
        if self._ticker:
            self._ticker.cancel()
            with contextlib.suppress(BaseException):
                await self._ticker
        await super().stop()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            for node in self.nodes.list():
                self.enqueue(node["metadata"]["name"])

    async def reconcile(self, key: str) -> None:
        node = self.nodes.get(None, key)
        lease = self.leases.get(LEASE_NS, key) if self.leases is not None else None
        conds = ((node or {}).get("status") or {}).get("conditions") or []
        if node is None or (lease is None and not conds):
            self._health.pop(key, None)
            return
        res = self.ctx.resource("", "nodes")
        clock = time.monotonic()
        health = self._health[key] = observe(self._health.get(key), node, lease, clock)
        silent = clock - health.probed
        now = _dt.datetime.now(_dt.UTC)
        stamp = now_rfc3339()
        if silent > self.grace:
            ready = _ready(node)
            if ready is None or ready.get("status") != "Unknown":
                log.info("node %s: no heartbeat seen for %.0fs; marking Unknown", key, silent)
                await self.registry.update_with(res, None, key, lambda n: mark_unknown(n, stamp),
                                                subresource="status")
                await self.ctx.recorder.record(
                    node, "Normal", "NodeNotReady",
                    f"Node {key} status is now: NodeNotReady", component="node-controller")
            evicting = self.evict_after > 0
            tainted = None
            if _taints_for(node, UNREACHABLE_TAINT, stamp, evicting) is not None:
                tainted = await self.registry.update_with(
                    res, None, key, lambda n: _set_taints(n, UNREACHABLE_TAINT, stamp, evicting))
            if evicting:
                await self._evict(key, tainted or node, now)
        else:
            # heartbeats are fresh: the taint follows the posted Ready condition. Each Lease
            # and each tick comes here (at 1,000 nodes 300 times a second): the store is read
            # only when the cached Node calls for a change (a cache behind the store is
            # caught up by its own event, which comes back here)
            evicting = self.evict_after > 0
            if _taints_for(node, desired_taint(node), stamp, evicting) is not None:
                await self.registry.update_with(
                    res, None, key, lambda n: _set_taints(n, desired_taint(n), stamp, evicting))
            self.enqueue(key, after=self.grace - silent + 0.5)

    async def _evict(self, key: str, node: dict, now: _dt.datetime) -> None:
        """Delete the node's pods whose time on the NoExecute taint is up; come back for the
        rest when theirs is."""
        added = next((parse_time(t.get("timeAdded")) for t in
                      (node.get("spec") or {}).get("taints") or []
                      if t.get("key") == UNREACHABLE_TAINT and t.get("effect") == "NoExecute"),
                     None)
        if added is None:
            return
        added = added if added.tzinfo else added.replace(tzinfo=_dt.UTC)
        waited = (now - added).total_seconds()
        res = self.ctx.resource("", "pods")
        for pod in self.pods.by_index(NODE_INDEX, key):
            md = pod["metadata"]
            if md.get("deletionTimestamp"):
                continue
            delay = eviction_delay(pod, self.evict_after)
            if delay is None:
                continue
            if waited < delay:
                self.enqueue(key, after=delay - waited + 0.1)
                continue
            log.info("node %s unreachable for %.0fs: evicting pod %s/%s", key, waited,
                     md["namespace"], md["name"])
            await self.ctx.recorder.record(
                pod, "Normal", "TaintManagerEviction",
                f"Marking for deletion Pod {md['namespace']}/{md['name']}",
                component="taint-eviction-controller")
            with contextlib.suppress(Exception):
                await self.registry.delete(res, md["namespace"], md["name"])
