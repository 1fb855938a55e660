"""HorizontalPodAutoscalerController: every sync period, each HPA's target scale is read, its
Resource metrics (cpu, memory; Utilization or AverageValue) are turned into a replica count
from the pods' usage (the metrics UsageStore: what metrics.k8s.io serves), normalized
(stabilization, rate limits, min/max) and written to the target's spec.replicas, with
upstream's conditions, status and Events.

Reads HPAs and pods through the shared informers and the targets (Deployments, ReplicaSets,
StatefulSets, ReplicationControllers: any kind with a scale subresource) through the Registry;
writes the targets' replicas and horizontalpodautoscalers/status. The arithmetic is
hpa_replicas.py's and hpa_behavior.py's. ctx.extra: "usage" (the UsageStore, None when
metrics-server is disabled), "hpa_sync_period", "hpa_downscale_stabilization",
"hpa_tolerance" (from --kube-controller-manager-arg)."""

from __future__ import annotations

import datetime as _dt
import logging
import math
import time
from typing import TYPE_CHECKING

from k3py.api import errors
from k3py.api.kinds.autoscaling import GROUP
from k3py.api.objects import now_rfc3339
from k3py.api.quantity import QuantityError, format_quantity, milli_value, parse_quantity
from k3py.api.resources import Resource
from k3py.api.selectors import SelectorError, label_selector_from_struct
from k3py.server.controllers.base import Controller, ControllerContext, object_key, split_key
from k3py.server.controllers.hpa_behavior import DOWNSCALE_STABILIZATION, Normalizer
from k3py.server.controllers.hpa_replicas import (
    TOLERANCE,
    PodFacts,
    Proposal,
    ReplicaError,
    Sample,
    average_replicas,
    utilization_replicas,
)

if TYPE_CHECKING:
    from k3py.server.metrics.store import UsageStore

__all__ = ["HorizontalPodAutoscalerController", "SYNC_PERIOD"]

log = logging.getLogger("k3py.controllers.hpa")

SYNC_PERIOD = 15.0  # --horizontal-pod-autoscaler-sync-period
COMPONENT = "horizontal-pod-autoscaler"
_CONDITION_ORDER = ("AbleToScale", "ScalingActive", "ScalingLimited")


def _time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _pod_facts(pod: dict, resource: str) -> PodFacts:
    md, status = pod.get("metadata") or {}, pod.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    total, missing = 0, ""
    for c in (pod.get("spec") or {}).get("containers") or []:
        request = ((c.get("resources") or {}).get("requests") or {}).get(resource)
        if request is None:
            missing = f"missing request for {resource} in container {c.get('name')} of " \
                      f"Pod {md.get('name')}"
            break
        try:
            total += milli_value(request)
        except QuantityError:
            missing = f"invalid request for {resource} in container {c.get('name')}"
            break
    return PodFacts(name=md.get("name") or "", phase=status.get("phase") or "Pending",
                    deleting=bool(md.get("deletionTimestamp")),
                    ready=None if ready is None else ready.get("status") == "True",
                    ready_since=_time((ready or {}).get("lastTransitionTime")),
                    started=_time(status.get("startTime")),
                    requests=None if missing else total, missing_request=missing)


class _Sync:
    """One HPA's sync: the conditions and metric statuses it sets as it goes."""

    def __init__(self, hpa: dict) -> None:
        self.hpa = hpa
        self.conditions: dict[str, tuple[str, str, str]] = {}
        self.metrics: list[dict] = []
        self.events: list[tuple[str, str, str]] = []

    def condition(self, type_: str, status: str, reason: str, message: str) -> None:
        self.conditions[type_] = (status, reason, message)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


class HorizontalPodAutoscalerController(Controller):
    name = "horizontal-pod-autoscaler"
    workers = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.res = ctx.resource(GROUP, "horizontalpodautoscalers")
        self.usage: UsageStore | None = ctx.extra.get("usage")
        self.sync_period = float(ctx.extra.get("hpa_sync_period") or SYNC_PERIOD)
        self.tolerance = float(ctx.extra.get("hpa_tolerance", TOLERANCE))
        self.normalizer = Normalizer(float(ctx.extra.get("hpa_downscale_stabilization",
                                                         DOWNSCALE_STABILIZATION)))

    def setup(self) -> None:
        self.hpas = self.ctx.informers.informer(GROUP, "horizontalpodautoscalers")
        self.pods = self.ctx.informers.informer("", "pods")
        self.hpas.add_handler(self._on_hpa)

    def _on_hpa(self, etype: str, old: dict | None, new: dict | None) -> None:
        key = object_key(new or old or {})
        if etype == "DELETED":
            self.normalizer.forget(key)
        elif old is None or (old.get("spec") != (new or {}).get("spec")):
            self.enqueue(key)  # new or changed now; the status we write waits its period

    async def reconcile(self, key: str) -> None:
        await self.hpas.synced.wait()
        await self.pods.synced.wait()
        ns, name = split_key(key)
        hpa = self.hpas.get(ns, name)
        if hpa is None or hpa["metadata"].get("deletionTimestamp"):
            return
        try:
            await self._sync(key, hpa)
        finally:
            self.enqueue(key, self.sync_period)

    # ---------------------------------------------------------------- one sync

    def _target_resource(self, ref: dict) -> Resource | None:
        group = (ref.get("apiVersion") or "").rpartition("/")[0]
        res = self.registry.resources.by_kind(group, ref.get("kind") or "")
        return res if res is not None and "scale" in res.subresources else None

    async def _sync(self, key: str, hpa: dict) -> None:
        sync = _Sync(hpa)
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        ns = hpa["metadata"]["namespace"]
        res = self._target_resource(ref)
        target = await self.registry.try_get(res, ns, ref.get("name") or "") \
            if res is not None else None
        if target is None:
            what = f'{res.group_resource} "{ref.get("name")}" not found' if res is not None \
                else f'no matches for kind "{ref.get("kind")}" in group ' \
                     f'"{(ref.get("apiVersion") or "").rpartition("/")[0]}"'
            sync.condition("AbleToScale", "False", "FailedGetScale",
                           f"the HPA controller was unable to get the target's current "
                           f"scale: {what}")
            sync.event("Warning", "FailedGetScale", what)
            await self._finish(sync, None, None, rescaled=False)
            return
        assert res is not None
        current = int((target.get("spec") or {}).get("replicas", 1))
        sync.condition("AbleToScale", "True", "SucceededGetScale",
                       "the HPA controller was able to get the target's current scale")
        low, high = int(spec.get("minReplicas") or 1), int(spec.get("maxReplicas") or 1)
        desired, reason = current, ""
        if current == 0 and low != 0:
            sync.condition("ScalingActive", "False", "ScalingDisabled",
                           "scaling is disabled since the replica count of the target is zero")
        elif current > high:
            desired, reason = high, "Current number of replicas above Spec.MaxReplicas"
        elif current < low:
            desired, reason = low, "Current number of replicas below Spec.MinReplicas"
        else:
            proposed, metric = self._metrics_replicas(sync, ns, target, current)
            if proposed is None:
                await self._finish(sync, current, None, rescaled=False)
                return
            if proposed > current:
                reason = f"{metric} above target"
            elif proposed < current:
                reason = "All metrics below target"
            outcome = self.normalizer.normalize(
                key, current=current, proposed=proposed, low=low, high=high,
                behavior=spec.get("behavior"), now=time.time())
            sync.condition("AbleToScale", "True", outcome.able_reason, outcome.able_message)
            sync.condition("ScalingLimited", "True" if outcome.limited else "False",
                           outcome.limited_reason, outcome.limited_message)
            desired = outcome.replicas
        rescaled = False
        if desired != current:
            rescaled = await self._rescale(sync, res, target, desired, reason)
            if rescaled:
                self.normalizer.record_scale(key, current, desired, spec.get("behavior"),
                                             time.time())
        await self._finish(sync, current, desired if rescaled else current, rescaled)

    async def _rescale(self, sync: _Sync, res: Resource, target: dict, desired: int,
                       reason: str) -> bool:
        md = target["metadata"]

        def scale(cur: dict) -> dict:
            cur.setdefault("spec", {})["replicas"] = desired
            return cur
        try:
            await self.registry.update_with(res, md["namespace"], md["name"], scale)
        except errors.StatusError as e:
            sync.event("Warning", "FailedRescale",
                       f"New size: {desired}; reason: {reason}; error: {e.message}")
            sync.condition("AbleToScale", "False", "FailedUpdateScale",
                           f"the HPA controller was unable to update the target scale: "
                           f"{e.message}")
            return False
        sync.condition("AbleToScale", "True", "SucceededRescale",
                       f"the HPA controller was able to update the target scale to {desired}")
        sync.event("Normal", "SuccessfulRescale", f"New size: {desired}; reason: {reason}")
        log.info("%s/%s: scaled %s %s to %d (%s)", md["namespace"], sync.hpa["metadata"]["name"],
                 target.get("kind"), md["name"], desired, reason)
        return True

    def _metrics_replicas(self, sync: _Sync, ns: str, target: dict, current: int
                          ) -> tuple[int | None, str]:
        """The largest proposal over the metrics; None when no count can be trusted (all
        invalid, or some invalid and the rest would scale down), as upstream."""
        metrics = (sync.hpa.get("spec") or {}).get("metrics") or []
        try:
            selector = label_selector_from_struct((target.get("spec") or {}).get("selector"))
        except SelectorError as e:
            sync.condition("ScalingActive", "False", "InvalidSelector",
                           f"the HPA target's scale has an invalid selector: {e}")
            return None, ""
        pods = [p for p in self.pods.list(ns)
                if selector.matches((p.get("metadata") or {}).get("labels"))]
        best, best_name, invalid, first_error = 0, "", 0, ""
        for m in metrics:
            try:
                proposal, name, status = self._resource_metric(m, pods, current)
            except ReplicaError as e:
                invalid += 1
                first_error = first_error or str(e)
                sync.metrics.append({"type": ""})
                reason = "FailedGetResourceMetric" if m.get("type") == "Resource" \
                    else f"FailedGet{m.get('type')}Metric"
                sync.condition("ScalingActive", "False", reason,
                               f"the HPA was unable to compute the replica count: {e}")
                sync.event("Warning", reason, str(e))
                continue
            sync.metrics.append(status)
            if proposal > best:
                best, best_name = proposal, name
        if invalid >= len(metrics) or (invalid and best < current):
            sync.event("Warning", "FailedComputeMetricsReplicas",
                       f"invalid metrics ({invalid} invalid out of {len(metrics)}), first "
                       f"error is: {first_error}")
            return None, ""
        sync.condition("ScalingActive", "True", "ValidMetricFound",
                       f"the HPA was able to successfully calculate a replica count from "
                       f"{best_name}")
        return best, best_name

    def _samples(self, pods: list[dict], resource: str) -> dict[str, Sample]:
        """Each pod's usage of `resource` in milli-units (as the metrics client sums it),
        for the pods metrics.k8s.io would list."""
        out: dict[str, Sample] = {}
        for pod in pods:
            if self.usage is None or (pod.get("status") or {}).get("phase") != "Running":
                continue
            sample = self.usage.pod(pod["metadata"].get("uid") or "")
            if sample is None:
                continue
            names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
            usages = [sample.usage.containers.get(n) for n in names]
            if not usages or any(u is None for u in usages):
                continue
            value = sum(math.ceil(u.cpu / 1_000_000) if resource == "cpu" else u.memory * 1000
                        for u in usages if u is not None)
            out[pod["metadata"]["name"]] = Sample(value, sample.timestamp, sample.window)
        return out

    def _resource_metric(self, m: dict, pods: list[dict], current: int
                         ) -> tuple[int, str, dict]:
        if m.get("type") != "Resource":
            raise ReplicaError(f"k3py serves only Resource metrics (cpu, memory), not "
                               f"{m.get('type')} metrics")
        r = m.get("resource") or {}
        resource, target = r.get("name") or "", r.get("target") or {}
        utilization = target.get("type") == "Utilization"
        what = "utilization" if utilization else "usage"
        if resource not in ("cpu", "memory"):
            raise ReplicaError(f"failed to get {resource} {what}: unable to get metrics for "
                               f"resource {resource}: k3py measures cpu and memory only")
        samples = self._samples(pods, resource)
        if not samples:
            raise ReplicaError(f"failed to get {resource} {what}: unable to get metrics for "
                               f"resource {resource}: no metrics returned from resource "
                               f"metrics API")
        facts = [_pod_facts(p, resource) for p in pods]
        cpu, now = resource == "cpu", time.time()
        try:
            if utilization:
                p: Proposal = utilization_replicas(
                    current, int(target.get("averageUtilization") or 0), facts, samples,
                    cpu=cpu, now=now, tolerance=self.tolerance)
            else:
                p = average_replicas(current, milli_value(target.get("averageValue")), facts,
                                     samples, cpu=cpu, now=now, tolerance=self.tolerance)
        except ReplicaError as e:
            raise ReplicaError(f"failed to get {resource} {what}: {e}") from None
        value = format_quantity(parse_quantity(f"{p.raw_average}m"))
        current_status: dict = {"averageValue": value}
        if p.utilization is not None:
            current_status = {"averageUtilization": p.utilization, **current_status}
        name = f"{resource} resource utilization (percentage of request)" if utilization \
            else f"{resource} resource"
        return p.replicas, name, {"type": "Resource", "resource": {
            "name": resource, "current": current_status}}

    # ---------------------------------------------------------------- status and events

    async def _finish(self, sync: _Sync, current: int | None, desired: int | None,
                      rescaled: bool) -> None:
        hpa = sync.hpa
        for type_, reason, message in sync.events:
            await self.ctx.recorder.record(hpa, type_, reason, message, component=COMPONENT)
        md = hpa["metadata"]

        def write(cur: dict) -> dict | None:
            old = cur.get("status") or {}
            status = dict(old)
            status["observedGeneration"] = cur["metadata"].get("generation")
            if current is not None:
                status["currentReplicas"] = current
            if desired is not None:
                status["desiredReplicas"] = desired
            status.setdefault("desiredReplicas", 0)
            if sync.metrics:
                status["currentMetrics"] = sync.metrics
            else:
                status.pop("currentMetrics", None)
            if rescaled:
                status["lastScaleTime"] = now_rfc3339()
            status["conditions"] = _merge_conditions(old.get("conditions") or [],
                                                     sync.conditions)
            if status == old:
                return None
            cur["status"] = status
            return cur
        await self.registry.update_with(self.res, md["namespace"], md["name"], write,
                                        subresource="status")


def _merge_conditions(old: list[dict], new: dict[str, tuple[str, str, str]]) -> list[dict]:
    """The conditions in upstream's order; lastTransitionTime moves only with the status."""
    by_type = {c.get("type"): c for c in old}
    out = []
    for type_ in _CONDITION_ORDER:
        if type_ not in new:
            if type_ in by_type:
                out.append(by_type[type_])
            continue
        status, reason, message = new[type_]
        prev = by_type.get(type_)
        since = prev.get("lastTransitionTime") if prev and prev.get("status") == status \
            else now_rfc3339()
        out.append({"type": type_, "status": status, "lastTransitionTime": since,
                    "reason": reason, "message": message})
    return out
