"""The HPA's replica count for one Resource metric, as upstream's replica calculator works
it out: pods grouped into ready, unready (CPU only: still starting), missing metrics and
ignored (deleting, finished); a ratio of usage to target within the tolerance changes
nothing; missing and unready pods are assumed to use what makes the change smallest.

Pure (no I/O, `now` passed in); k3py.server.controllers.hpa feeds it the pods and samples and
the unit tests check it against upstream's cases. Values are in milli-units (millicores,
milli-bytes) as upstream's metrics client gives them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TOLERANCE", "CPU_INITIALIZATION_PERIOD", "INITIAL_READINESS_DELAY", "PodFacts",
           "Sample", "Proposal", "ReplicaError", "utilization_replicas", "average_replicas"]

TOLERANCE = 0.1  # --horizontal-pod-autoscaler-tolerance
CPU_INITIALIZATION_PERIOD = 300.0  # --horizontal-pod-autoscaler-cpu-initialization-period
INITIAL_READINESS_DELAY = 30.0  # --horizontal-pod-autoscaler-initial-readiness-delay


class ReplicaError(Exception):
    """No replica count can be computed (the HPA reports it and does not scale)."""


@dataclass(frozen=True, slots=True)
class PodFacts:
    """What the calculator needs of one pod. `requests`: milli-units of the resource summed
    over its containers, None when a container requests none (`missing_request` names it)."""
    name: str
    phase: str = "Running"
    deleting: bool = False
    ready: bool | None = True  # the Ready condition's status; None when it has none
    ready_since: float | None = None  # the Ready condition's lastTransitionTime
    started: float | None = None  # status.startTime
    requests: int | None = 0
    missing_request: str = ""


@dataclass(frozen=True, slots=True)
class Sample:
    value: int  # milli-units
    timestamp: float
    window: float


@dataclass(frozen=True, slots=True)
class Proposal:
    replicas: int
    raw_average: int  # milli-units per pod (status currentMetrics averageValue)
    utilization: int | None = None  # percent of requests (Utilization targets)


def _group(pods: list[PodFacts], samples: dict[str, Sample], cpu: bool, now: float
           ) -> tuple[int, set[str], set[str], set[str]]:
    """(ready count, unready, missing, ignored) as upstream's groupPods."""
    ready, unready, missing, ignored = 0, set(), set(), set()
    for pod in pods:
        if pod.deleting or pod.phase in ("Failed", "Succeeded"):
            ignored.add(pod.name)
            continue
        if pod.phase == "Pending":
            unready.add(pod.name)
            continue
        sample = samples.get(pod.name)
        if sample is None:
            missing.add(pod.name)
            continue
        if cpu and _cpu_unready(pod, sample, now):
            unready.add(pod.name)
            continue
        ready += 1
    return ready, unready, missing, ignored


def _cpu_unready(pod: PodFacts, sample: Sample, now: float) -> bool:
    """A pod's CPU is not counted while it starts: unready, or measured (partly) before it
    became ready, within the initialization period; after it, only if never ready yet."""
    if pod.ready is None or pod.started is None:
        return True
    since = pod.ready_since if pod.ready_since is not None else pod.started
    if pod.started + CPU_INITIALIZATION_PERIOD > now:
        return not pod.ready or sample.timestamp < since + sample.window
    return not pod.ready and pod.started + INITIAL_READINESS_DELAY > since


def _check(pods: list[PodFacts]) -> None:
    if not pods:
        raise ReplicaError("no pods returned by selector while calculating replica count")


def _kept(samples: dict[str, Sample], drop: set[str]) -> dict[str, int]:
    kept = {n: s.value for n, s in samples.items() if n not in drop}
    if not kept:
        raise ReplicaError("did not receive metrics for targeted pods (pods might be unready)")
    return kept


def _utilization(values: dict[str, int], requests: dict[str, int], target: int
                 ) -> tuple[float, int, int]:
    """(usage ratio, utilization %, raw average) over the pods with a request."""
    total = requested = entries = 0
    for name, value in values.items():
        if name in requests:
            total += value
            requested += requests[name]
            entries += 1
    if requested == 0:
        raise ReplicaError("no metrics returned matched known pods")
    utilization = total * 100 // requested
    return utilization / target, utilization, total // entries


def _propose(current: int, ratio: float, grouped: tuple[int, set[str], set[str], set[str]],
             values: dict[str, int], fallback: Callable[[str], int],
             ratio_of: Callable[[dict[str, int]], float], tolerance: float) -> int:
    """The replica count from the usage ratio of the pods measured; when pods lack metrics
    (or, on a scale-up, are unready), again with those filled in: missing ones by
    `fallback` on a scale-down and 0 on a scale-up, unready ones 0. No change when the ratio
    is within the tolerance, or filling in flips the direction of the change."""
    ready, unready, missing, _ = grouped
    scale_up_with_unready = bool(unready) and ratio > 1.0
    if not scale_up_with_unready and not missing:
        return current if abs(1.0 - ratio) <= tolerance else math.ceil(ratio * ready)
    for name in missing:
        values[name] = fallback(name) if ratio < 1.0 else 0
    if scale_up_with_unready:
        for name in unready:
            values[name] = 0
    new_ratio = ratio_of(values)
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or \
            (ratio > 1.0 > new_ratio):
        return current
    replicas = math.ceil(new_ratio * len(values))
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return current
    return replicas


def utilization_replicas(current: int, target: int, pods: list[PodFacts],
                         samples: dict[str, Sample], *, cpu: bool, now: float,
                         tolerance: float = TOLERANCE) -> Proposal:
    """A Utilization target (percent of the pods' requests)."""
    _check(pods)
    grouped = _group(pods, samples, cpu, now)
    values = _kept(samples, grouped[3] | grouped[1])
    requests = {}
    for pod in pods:
        if pod.requests is None:
            raise ReplicaError(pod.missing_request)
        requests[pod.name] = pod.requests
    ratio, utilization, raw = _utilization(values, requests, target)
    replicas = _propose(
        current, ratio, grouped, values,
        # a missing pod on a scale-down uses the target, at least its request
        lambda name: requests[name] * max(100, target) // 100,
        lambda vs: _utilization(vs, requests, target)[0], tolerance)
    return Proposal(replicas, raw, utilization)


def average_replicas(current: int, target: int, pods: list[PodFacts],
                     samples: dict[str, Sample], *, cpu: bool, now: float,
                     tolerance: float = TOLERANCE) -> Proposal:
    """An AverageValue target (milli-units per pod)."""
    _check(pods)
    grouped = _group(pods, samples, cpu, now)
    values = _kept(samples, grouped[3] | grouped[1])
    average = sum(values.values()) // len(values)
    replicas = _propose(current, average / target, grouped, values, lambda _: target,
                        lambda vs: (sum(vs.values()) // len(vs)) / target, tolerance)
    return Proposal(replicas, average)
