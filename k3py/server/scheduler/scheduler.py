"""The default-scheduler: watches unscheduled pods and nodes, filters and scores nodes from a
pod-per-node cache, binds the pod's volumes (volumebinding.py) and then the pod through the
pods/binding logic (k3py.server.apiserver.handlers)."""

from __future__ import annotations

import asyncio
import logging
import random
import time

from k3py.api import errors
from k3py.api.objects import now_rfc3339
from k3py.server.apiserver.handlers import bind_pod
from k3py.server.controllers.base import Controller, ControllerContext, split_key
from k3py.server.scheduler.equivalence import EquivalenceCache, fits_by_verdicts
from k3py.server.scheduler.filters import UNRESOLVABLE, filters_for, run_filters
from k3py.server.scheduler.nodeinfo import NodeInfo, pod_key
from k3py.server.scheduler.podstate import PodState
from k3py.server.scheduler.sampling import NodeSampler
from k3py.server.scheduler.scores import RawScores, raw_scores, weighted_totals
from k3py.server.scheduler.volumebinding import Decision, PodVolumes, VolumeBinder

__all__ = ["Scheduler", "fit_error_message", "pre_filter_error_message", "SCHEDULER_NAME",
           "REASON_NOT_NAMED", "REASON_TERMS_CONFLICT"]

log = logging.getLogger("k3py.scheduler")

SCHEDULER_NAME = "default-scheduler"
RETRY_UNSCHEDULABLE = 30.0
# upstream's NodeAffinity texts: terms whose metadata.name sets exclude each other, and the
# nodes its PreFilterResult (the names a DaemonSet pod's affinity lists) leaves out
REASON_TERMS_CONFLICT = "pod affinity terms conflict"
REASON_NOT_NAMED = "node(s) didn't satisfy plugin(s) [NodeAffinity]"


def _histogram(counts: dict[str, int]) -> str:
    return ", ".join(sorted(f"{n} {reason}" for reason, n in counts.items()))


def fit_error_message(num_nodes: int, failures: dict[str, tuple[str, list[str]]]) -> str:
    """Upstream's FitError text plus the preemption post-filter summary."""
    if num_nodes == 0:
        return "0/0 nodes are available: no nodes available to schedule pods."
    reasons: dict[str, int] = {}
    preemption: dict[str, int] = {}
    for plugin, node_reasons in failures.values():
        for r in node_reasons:
            reasons[r] = reasons.get(r, 0) + 1
        why = "Preemption is not helpful for scheduling" if plugin in UNRESOLVABLE \
            else "No preemption victims found for incoming pod"
        preemption[why] = preemption.get(why, 0) + 1
    return (f"0/{num_nodes} nodes are available: {_histogram(reasons)}. "
            f"preemption: 0/{num_nodes} nodes are available: {_histogram(preemption)}.")


def pre_filter_error_message(num_nodes: int, message: str) -> str:
    """Upstream's FitError when a PreFilter plugin rejects the pod before any node."""
    return (f"0/{num_nodes} nodes are available: {message}. preemption: 0/{num_nodes} nodes "
            f"are available: {num_nodes} Preemption is not helpful for scheduling.")


def _wants_scheduling(pod: dict) -> bool:
    spec = pod.get("spec") or {}
    if spec.get("nodeName") or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    if (spec.get("schedulerName") or SCHEDULER_NAME) != SCHEDULER_NAME:
        return False
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _occupies_node(pod: dict) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName")) and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _same_usage(old: dict, new: dict) -> bool:
    """Both revisions occupy the same node with the same spec and controller: the informer
    shares the parts that did not change between revisions, so this is identity, not a walk."""
    return _occupies_node(old) and _occupies_node(new) and old.get("spec") is new.get("spec") \
        and (old.get("metadata") or {}).get("ownerReferences") is \
        (new.get("metadata") or {}).get("ownerReferences")


class Scheduler(Controller):
    """One scheduling decision at a time (the cache is the truth); bindings run concurrently."""

    name = "scheduler"
    workers = 1

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.nodes: dict[str, NodeInfo] = {}
        self._pod_node: dict[str, str] = {}  # pod key -> node it occupies in the cache
        self._assumed: dict[str, float] = {}  # pod key -> when we bound it ourselves
        self.unschedulable: set[str] = set()
        self._attempts: dict[str, int] = {}
        self._binds: set[asyncio.Task] = set()
        # pods whose binding task runs: one waiting for its volumes may outlive the assumed
        # placement's 30 s and must not be decided a second time meanwhile
        self._binding: set[str] = set()
        self._periodic: asyncio.Task | None = None
        self._sampler = NodeSampler()
        self._candidates: list[NodeInfo] | None = None  # the nodes with a Node, in order
        self._equivalence = EquivalenceCache()

    # ------------------------------------------------------------ cache upkeep

    def _info(self, name: str) -> NodeInfo:
        info = self.nodes.get(name)
        if info is None:
            info = self.nodes[name] = NodeInfo(name=name)
        return info

    def _place(self, key: str, pod: dict | None) -> None:
        old_node = self._pod_node.pop(key, None)
        if old_node is not None and old_node in self.nodes:
            info = self.nodes[old_node]
            info.remove_pod(key)
            if info.node is None and not info.pods:
                del self.nodes[old_node]
        if pod is not None and _occupies_node(pod):
            node = pod["spec"]["nodeName"]
            self._info(node).add_pod(pod)
            self._pod_node[key] = node

    def _on_pod(self, etype: str, old: dict | None, new: dict | None) -> None:
        pod = new if etype != "DELETED" else None
        key = pod_key(new or old or {})
        if pod is not None and old is not None and _same_usage(old, pod) and \
                self._pod_node.get(key) == (pod.get("spec") or {}).get("nodeName"):
            return  # a bound pod's status update: where it is and what it takes are unchanged
        if pod is not None and key in self._assumed and not _occupies_node(pod):
            # the watch has not caught up with our binding yet: keep the assumed placement
            if time.monotonic() - self._assumed[key] < 30:
                return
        if pod is None or _occupies_node(pod):
            self._assumed.pop(key, None)
        self._place(key, pod)
        if pod is not None and _wants_scheduling(pod) and key not in self._assumed:
            # our own status writes must not spin an unschedulable pod; spec changes retry it
            if key not in self.unschedulable or old is None or \
                    old.get("spec") != pod.get("spec"):
                self.enqueue(key)
        else:
            self.unschedulable.discard(key)
            self._attempts.pop(key, None)
        if etype == "DELETED" or (old is not None and _occupies_node(old)
                                  and (pod is None or not _occupies_node(pod))):
            self._retry_unschedulable()

    def _on_node(self, etype: str, old: dict | None, new: dict | None) -> None:
        name = (new or old or {}).get("metadata", {}).get("name")
        if not name:
            return
        if etype == "DELETED":
            info = self.nodes.get(name)
            if info is not None:
                info.node = None
                self._candidates = None
                self._equivalence.forget_node(name)
                if not info.pods:
                    del self.nodes[name]
            return
        info = self._info(name)
        if info.node is None:
            self._candidates = None
        info.node = new
        if old is None or (old.get("spec"), (old.get("metadata") or {}).get("labels"),
                           (old.get("status") or {}).get("allocatable")) != \
                (new.get("spec"), (new.get("metadata") or {}).get("labels"),
                 (new.get("status") or {}).get("allocatable")):
            self._retry_unschedulable()

    def _retry_unschedulable(self) -> None:
        for key in list(self.unschedulable):
            self.enqueue(key)

    def _on_volume_change(self, etype: str, old: dict | None, new: dict | None) -> None:
        # a claim created or bound, a volume or class added: pods waiting on them may fit
        if self.unschedulable:
            self._retry_unschedulable()

    def setup(self) -> None:
        self.pods = self.ctx.informers.informer("", "pods")
        self.node_informer = self.ctx.informers.informer("", "nodes")
        self.node_informer.add_handler(self._on_node)
        self.pods.add_handler(self._on_pod)
        self.pod_res = self.ctx.resource("", "pods")
        self.volume_binder = VolumeBinder(self.ctx)
        for inf in (self.volume_binder.claims, self.volume_binder.volumes,
                    self.volume_binder.classes):
            inf.add_handler(self._on_volume_change)

    async def start(self) -> None:
        await super().start()
        self._periodic = asyncio.create_task(self._flush_unschedulable(),
                                             name="scheduler-retry")

    async def stop(self) -> None:
        if self._periodic:
            self._periodic.cancel()
        for t in list(self._binds):
            t.cancel()
        await super().stop()

    async def _flush_unschedulable(self) -> None:
        while True:
            await asyncio.sleep(RETRY_UNSCHEDULABLE)
            self._retry_unschedulable()

    # ------------------------------------------------------------ one decision

    async def reconcile(self, key: str) -> None:
        await self.pods.synced.wait()
        await self.node_informer.synced.wait()
        await self.volume_binder.synced()
        ns, name = split_key(key)
        pod = self.pods.get(ns, name)
        if pod is None or not _wants_scheduling(pod) or key in self._assumed or \
                key in self._binding:
            self.unschedulable.discard(key)
            return
        if (pod.get("spec") or {}).get("schedulingGates"):
            await self._set_condition(pod, "SchedulingGated",
                                      "Scheduling is blocked due to non-empty scheduling gates")
            return
        state = PodState.of(pod)
        node = self.schedule_one(state)
        if isinstance(node, str):
            self.unschedulable.discard(key)
            self._attempts.pop(key, None)
            decision = self._assume_volumes(pod, node)
            self._assume(state, node)
            task = asyncio.create_task(self._bind(pod, node, decision), name=f"bind-{key}")
            self._binds.add(task)
            self._binding.add(key)
            task.add_done_callback(self._binds.discard)
            task.add_done_callback(lambda _t: self._binding.discard(key))
            return
        message = node[1]
        self.unschedulable.add(key)
        n = self._attempts.get(key, 0) + 1
        self._attempts[key] = n
        self.enqueue(key, after=min(1.0 * 2 ** (n - 1), RETRY_UNSCHEDULABLE))
        await self.ctx.recorder.record(pod, "Warning", "FailedScheduling", message,
                                       component=SCHEDULER_NAME)
        await self._set_condition(pod, "Unschedulable", message)

    def _nodes(self) -> list[NodeInfo]:
        """The NodeInfos that have a Node object: the candidates of every cycle (kept until a
        Node comes or goes, not rebuilt for each pod)."""
        if self._candidates is None:
            self._candidates = [i for i in self.nodes.values() if i.node is not None]
        return self._candidates

    def schedule_one(self, state: PodState) -> str | tuple[None, str]:
        """The chosen node name for the pod of `state`, or (None, FailedScheduling message)."""
        nodes = self._nodes()
        candidates = nodes
        if state.node_names is not None:  # NodeAffinity's PreFilterResult (upstream: first)
            if not state.node_names and nodes:
                return None, pre_filter_error_message(len(nodes), REASON_TERMS_CONFLICT)
            candidates = [self.nodes[n] for n in sorted(state.node_names)
                          if n in self.nodes and self.nodes[n].node is not None]
        volumes = self.volume_binder.pre_filter(state.pod)
        if isinstance(volumes, str) and nodes:
            return None, pre_filter_error_message(len(nodes), volumes)
        filters = filters_for(state)
        check_volumes = isinstance(volumes, PodVolumes) and not volumes.empty
        # a pod tried on every node, whose volumes nothing needs to check, takes its class's
        # verdicts where the node has not changed since (a DaemonSet pod's class is its node)
        known = self._equivalence.verdicts(state) \
            if candidates is nodes and not check_volumes else None
        failures: dict[str, tuple[str, list[str]]] = {}
        scored: list[RawScores] = []  # of the feasible nodes, in their order

        def evaluate(info: NodeInfo) -> bool:  # each node afresh
            plugin, reasons = run_filters(state, info, filters)
            if not reasons and check_volumes:
                plugin, reasons = "VolumeBinding", \
                    self.volume_binder.filter(volumes, info.node or {})
            if reasons:
                failures[info.name] = (plugin, reasons)
                return False
            scored.append(raw_scores(state, info))
            return True

        fits = evaluate if known is None \
            else fits_by_verdicts(known, state, filters, failures, scored)

        # the named nodes (a DaemonSet pod's one) are all tried, and the rotation over every
        # node is left where it was for the next pod
        feasible = self._sampler.find(candidates, fits) if candidates is nodes \
            else [info for info in candidates if fits(info)]
        if not feasible:
            if candidates is not nodes:
                for info in nodes:
                    failures.setdefault(info.name, ("NodeAffinity", [REASON_NOT_NAMED]))
            return None, fit_error_message(len(nodes), failures)
        if len(feasible) == 1:
            return feasible[0].name
        totals = weighted_totals(state, scored)
        best = max(totals)
        return random.choice([info.name for info, total in zip(feasible, totals, strict=True)
                              if total == best])

    def _assume_volumes(self, pod: dict, node: str) -> Decision | None:
        volumes = self.volume_binder.pre_filter(pod)
        if isinstance(volumes, str) or volumes.empty:
            return None
        return self.volume_binder.assume(volumes, self.nodes[node].node or {})

    def _assume(self, state: PodState, node: str) -> None:
        """The pod on `node` in the cache now, with what the cycle read of it."""
        key = pod_key(state.pod)
        self._assumed[key] = time.monotonic()
        self._place(key, None)
        self._info(node).add(key, state.usage())
        self._pod_node[key] = node

    def _forget(self, key: str) -> None:
        self._assumed.pop(key, None)
        self._place(key, None)

    async def _bind_volumes(self, pod: dict, decision: Decision) -> bool:
        """PreBind: False (and the pod back in the queue) when its volumes could not be bound."""
        key = pod_key(pod)
        try:
            await self.volume_binder.bind(decision)
            return True
        except asyncio.CancelledError:
            raise
        except (errors.StatusError, TimeoutError) as e:
            message = e.message if isinstance(e, errors.StatusError) else str(e)
        self._forget(key)
        self.unschedulable.add(key)
        self.enqueue(key, after=1.0)
        await self.ctx.recorder.record(pod, "Warning", "FailedScheduling",
                                       f'running PreBind plugin "VolumeBinding": {message}',
                                       component=SCHEDULER_NAME)
        return False

    async def _bind(self, pod: dict, node: str, decision: Decision | None = None) -> None:
        md = pod["metadata"]
        key = pod_key(pod)
        if decision is not None and not await self._bind_volumes(pod, decision):
            return
        try:
            await bind_pod(self.registry, self.pod_res, md["namespace"], md["name"], node)
        except errors.StatusError as e:
            log.info("binding %s to %s failed: %s", key, node, e.message)
            self._forget(key)
            if e.code == 409 and "already assigned" not in e.message and \
                    "being deleted" not in e.message:
                self.enqueue(key, after=0.1)
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001
            log.exception("binding %s to %s failed", key, node)
            self._forget(key)
            self.enqueue(key, after=1.0)
            return
        await self.ctx.recorder.record(
            pod, "Normal", "Scheduled",
            f"Successfully assigned {md['namespace']}/{md['name']} to {node}",
            component=SCHEDULER_NAME)

    async def _set_condition(self, pod: dict, reason: str, message: str) -> None:
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("reason") == reason and \
                    c.get("message") == message and c.get("status") == "False":
                return

        def mutate(cur: dict) -> dict | None:
            if (cur.get("spec") or {}).get("nodeName"):
                return None
            status = cur.setdefault("status", {})
            conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "False", "lastProbeTime": None,
                          "lastTransitionTime": now_rfc3339(), "reason": reason,
                          "message": message})
            status["conditions"] = conds
            status.setdefault("phase", "Pending")
            return cur
        md = pod["metadata"]
        try:
            await self.registry.update_with(self.pod_res, md["namespace"], md["name"], mutate,
                                            subresource="status")
        except errors.StatusError as e:
            log.debug("pod condition for %s/%s: %s", md["namespace"], md["name"], e.message)
