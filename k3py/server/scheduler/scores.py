"""Scheduler scores as upstream's default plugins compute them, each 0..100 per node after
normalisation, combined with upstream's weights. Pure; scheduler.py picks the best node."""

from __future__ import annotations

import math

from k3py.server.scheduler.filters import node_selector_term_matches, tolerates
from k3py.server.scheduler.nodeinfo import NodeInfo, pod_controller, requests_of

__all__ = ["least_allocated", "balanced_allocation", "spread_raw", "score_nodes", "MAX_SCORE",
           "WEIGHTS"]

MAX_SCORE = 100
WEIGHTS = {"NodeResourcesFit": 1, "NodeResourcesBalancedAllocation": 1, "NodeAffinity": 2,
           "TaintToleration": 3, "SelectorSpread": 2}


def _fractions(pod: dict, info: NodeInfo) -> list[tuple[int, int]]:
    """(requested including this pod, allocatable) for cpu and memory."""
    return _fractions_of(requests_of(pod, non_zero=True), info)


def _fractions_of(want: dict[str, int], info: NodeInfo) -> list[tuple[int, int]]:
    alloc = info.allocatable()
    out = []
    for r in ("cpu", "memory"):
        cap = alloc.get(r, 0) if alloc is not None else 0
        out.append((info.non_zero_requested.get(r, 0) + want.get(r, 0), cap))
    return out


def least_allocated(pod: dict, info: NodeInfo) -> int:
    """Average over cpu and memory of the free share left after placing the pod."""
    return _least_allocated(_fractions(pod, info))


def _least_allocated(fractions: list[tuple[int, int]]) -> int:
    parts = []
    for used, cap in fractions:
        if cap <= 0 or used > cap:
            parts.append(0)
        else:
            parts.append((cap - used) * MAX_SCORE // cap)
    return sum(parts) // len(parts)


def balanced_allocation(pod: dict, info: NodeInfo) -> int:
    """Higher when cpu and memory are used in equal shares (1 - standard deviation)."""
    return _balanced_allocation(_fractions(pod, info))


def _balanced_allocation(fractions: list[tuple[int, int]]) -> int:
    shares = []
    for used, cap in fractions:
        shares.append(min(used / cap, 1.0) if cap > 0 else 1.0)
    mean = sum(shares) / len(shares)
    std = math.sqrt(sum((s - mean) ** 2 for s in shares) / len(shares))
    return int((1 - std) * MAX_SCORE)


def _preferred_terms(pod: dict) -> list[dict]:
    return ((((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {})
            .get("preferredDuringSchedulingIgnoredDuringExecution") or [])


def _affinity(preferred: list[dict], info: NodeInfo) -> int:
    """Sum of weights of the preferred node affinity terms the node matches."""
    node = info.node or {}
    return sum(int(p.get("weight") or 0) for p in preferred
               if node_selector_term_matches(p.get("preference") or {}, node))


def _prefer_no_schedule_tolerations(pod: dict) -> list[dict]:
    return [t for t in (pod.get("spec") or {}).get("tolerations") or []
            if (t.get("effect") or "PreferNoSchedule") == "PreferNoSchedule"]


def _untolerated(tolerations: list[dict], info: NodeInfo) -> int:
    """Count of PreferNoSchedule taints the pod does not tolerate (lower is better)."""
    return sum(1 for taint in ((info.node or {}).get("spec") or {}).get("taints") or []
               if taint.get("effect") == "PreferNoSchedule"
               and not any(tolerates(t, taint) for t in tolerations))


def spread_raw(pod: dict, info: NodeInfo) -> int:
    """Pods on the node with the same controller as this pod (lower is better)."""
    owner = pod_controller(pod)
    return 0 if owner is None else info.controlled[owner]


def _normalize(raw: dict[str, int], reverse: bool) -> dict[str, int]:
    top = max(raw.values(), default=0)
    if top == 0:
        return {n: MAX_SCORE if reverse else 0 for n in raw}
    if reverse:
        return {n: MAX_SCORE - v * MAX_SCORE // top for n, v in raw.items()}
    return {n: v * MAX_SCORE // top for n, v in raw.items()}


def score_nodes(pod: dict, infos: list[NodeInfo]) -> dict[str, int]:
    """Weighted total per feasible node name. What each plugin needs of the pod is read once
    (upstream's PreScore), then each node is scored in one pass: with 1,000 nodes, scoring
    was most of what the scheduler spent on a pod."""
    want = requests_of(pod, non_zero=True)
    preferred, tolerations = _preferred_terms(pod), _prefer_no_schedule_tolerations(pod)
    owner = pod_controller(pod)
    totals: dict[str, int] = {}
    raw: dict[str, dict[str, int]] = {"NodeAffinity": {}, "TaintToleration": {},
                                      "SelectorSpread": {}}
    for i in infos:
        fractions = _fractions_of(want, i)
        totals[i.name] = WEIGHTS["NodeResourcesFit"] * _least_allocated(fractions) + \
            WEIGHTS["NodeResourcesBalancedAllocation"] * _balanced_allocation(fractions)
        raw["NodeAffinity"][i.name] = _affinity(preferred, i) if preferred else 0
        raw["TaintToleration"][i.name] = _untolerated(tolerations, i)
        raw["SelectorSpread"][i.name] = 0 if owner is None else i.controlled[owner]
    for plugin, reverse in (("NodeAffinity", False), ("TaintToleration", True),
                            ("SelectorSpread", True)):
        for name, s in _normalize(raw[plugin], reverse).items():
            totals[name] += WEIGHTS[plugin] * s
    return totals
