"""Scheduler scores as upstream's default plugins compute them: raw_scores per node (kept by
equivalence.py), weighted_totals normalised over the feasible nodes. Pure; used by scheduler.py."""

from __future__ import annotations

import math
from collections.abc import Sequence

from k3py.server.scheduler.filters import node_selector_term_matches, tolerates
from k3py.server.scheduler.nodeinfo import NodeInfo
from k3py.server.scheduler.podstate import PodState

__all__ = ["least_allocated", "balanced_allocation", "spread_raw", "MAX_SCORE", "WEIGHTS",
           "RawScores", "raw_scores", "weighted_totals"]

MAX_SCORE = 100
WEIGHTS = {"NodeResourcesFit": 1, "NodeResourcesBalancedAllocation": 1, "NodeAffinity": 2,
           "TaintToleration": 3, "SelectorSpread": 2}
_FIT, _BALANCED = WEIGHTS["NodeResourcesFit"], WEIGHTS["NodeResourcesBalancedAllocation"]


Fractions = tuple[tuple[int, int], tuple[int, int]]


def _fractions(state: PodState, info: NodeInfo) -> Fractions:
    """(requested including this pod, allocatable) for cpu and memory."""
    want, have, facts = state.non_zero_requests, info.non_zero_requested, info.facts
    return ((have.get("cpu", 0) + want.get("cpu", 0), facts.cpu),
            (have.get("memory", 0) + want.get("memory", 0), facts.memory))


def least_allocated(state: PodState, info: NodeInfo) -> int:
    """Average over cpu and memory of the free share left after placing the pod."""
    return _least_allocated(_fractions(state, info))


def _least_allocated(fractions: Fractions) -> int:
    (cpu, cpu_cap), (mem, mem_cap) = fractions
    cpu_free = (cpu_cap - cpu) * MAX_SCORE // cpu_cap if 0 < cpu_cap and cpu <= cpu_cap else 0
    mem_free = (mem_cap - mem) * MAX_SCORE // mem_cap if 0 < mem_cap and mem <= mem_cap else 0
    return (cpu_free + mem_free) // 2


def balanced_allocation(state: PodState, info: NodeInfo) -> int:
    """Higher when cpu and memory are used in equal shares (1 - standard deviation)."""
    return _balanced_allocation(_fractions(state, info))


def _balanced_allocation(fractions: Fractions) -> int:
    (cpu, cpu_cap), (mem, mem_cap) = fractions
    a = cpu / cpu_cap if cpu_cap > 0 and cpu < cpu_cap else 1.0  # shares above 1 count as 1
    b = mem / mem_cap if mem_cap > 0 and mem < mem_cap else 1.0
    mean = (a + b) / 2
    std = math.sqrt(((a - mean) ** 2 + (b - mean) ** 2) / 2)
    return int((1 - std) * MAX_SCORE)


def _affinity(preferred: tuple[dict, ...], info: NodeInfo) -> int:
    """Sum of weights of the preferred node affinity terms the node matches."""
    node = info.node or {}
    return sum(int(p.get("weight") or 0) for p in preferred
               if node_selector_term_matches(p.get("preference") or {}, node))


def _untolerated(tolerations: tuple[dict, ...], info: NodeInfo) -> int:
    """Count of PreferNoSchedule taints the pod does not tolerate (lower is better)."""
    return sum(1 for taint in info.facts.soft_taints
               if not any(tolerates(t, taint) for t in tolerations))


def spread_raw(state: PodState, info: NodeInfo) -> int:
    """Pods on the node with the same controller as this pod (lower is better)."""
    return 0 if state.owner is None else info.controlled.get(state.owner, 0)


def _add_normalized(totals: list[int], raw: Sequence[int] | None, weight: int,
                    reverse: bool) -> int:
    """Add `weight` x raw normalised to 0..MAX_SCORE (against the highest; `reverse`: lower is
    better) into `totals`; when every node scores alike (all 0, or no raw scores: the plugin
    had nothing to tell apart), return the same score for all instead of adding it to each."""
    top = max(raw, default=0) if raw is not None else 0
    if top == 0:
        return weight * (MAX_SCORE if reverse else 0)
    # raw scores take few values (pods of a controller on a node: 0, 1, 2...): each value's
    # points once, then one lookup a node
    points = {v: weight * (MAX_SCORE - v * MAX_SCORE // top if reverse else v * MAX_SCORE // top)
              for v in set(raw)}
    totals[:] = [total + points[v] for total, v in zip(totals, raw, strict=True)]
    return 0


# One node's scores for one pod before the normalisation over the feasible nodes: what the node
# alone decides (equivalence.py keeps it while the node's generation stays). In this order:
# NodeResourcesFit + BalancedAllocation weighted (nothing to normalise), preferred node affinity
# weight matched, PreferNoSchedule taints not tolerated, pods of the same controller. A plain
# tuple: one is made for each node tried, and a NamedTuple's constructor doubles that cost.
RawScores = tuple[int, int, int, int]


def raw_scores(state: PodState, info: NodeInfo) -> RawScores:
    """Each plugin's raw score of the node; one a pod has nothing for is 0 (and stays out)."""
    fractions = _fractions(state, info)
    return (
        _FIT * _least_allocated(fractions) + _BALANCED * _balanced_allocation(fractions),
        _affinity(state.preferred, info) if state.preferred else 0,
        _untolerated(state.soft_tolerations, info) if info.facts.soft_taints else 0,
        spread_raw(state, info))


def weighted_totals(state: PodState, raws: list[RawScores]) -> list[int]:
    """The weighted total of each node of `raws` (the feasible nodes), each plugin's raw
    scores normalised over them all; a plugin with nothing to tell apart for this pod (no
    preferred terms, no PreferNoSchedule taint untolerated, no controller) adds one constant
    instead of a list per node."""
    if not raws:
        return []
    resources, affinity, untolerated, spread = zip(*raws, strict=True)  # one pass, in C
    totals = list(resources)
    same = _add_normalized(totals, affinity if state.preferred else None,
                           WEIGHTS["NodeAffinity"], False)
    same += _add_normalized(totals, untolerated if any(untolerated) else None,
                            WEIGHTS["TaintToleration"], True)
    same += _add_normalized(totals, spread if state.owner is not None else None,
                            WEIGHTS["SelectorSpread"], True)
    return [total + same for total in totals] if same else totals

