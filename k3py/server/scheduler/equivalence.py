"""Equivalence classes: pods the filters and scores cannot tell apart (a ReplicaSet's) share
each node's verdict, kept until that node's generation moves. Pure; used by scheduler.py.

What a filter or score reads of a pod is its PodState, so pods with equal PodStates (the pod
itself aside) get the same filter result and the same raw scores on a node whose NodeInfo has
not changed since: of the hundreds of nodes a pod is tried on, only those that took or lost a
pod or changed their facts since the last pod of its class are evaluated again (upstream's
equivalence cache did this for its predicates from 1.8 until its removal at the end of 2018). The
normalisation over the feasible nodes is not cached: it depends on which nodes were tried.

Sound only while every filter and score reads one node alone (today's: no PodTopologySpread,
no inter-pod affinity). A plugin that counts pods on other nodes of a zone would need those
pods evaluated afresh (no key), or a generation per topology domain."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import fields
from typing import NamedTuple

import orjson

from k3py.server.scheduler.filters import Filter, run_filters
from k3py.server.scheduler.nodeinfo import NodeInfo
from k3py.server.scheduler.podstate import PodState
from k3py.server.scheduler.scores import RawScores, raw_scores

__all__ = ["Verdict", "judge", "fits_by_verdicts", "equivalence_key", "EquivalenceCache",
           "CLASSES_KEPT"]

CLASSES_KEPT = 16  # the classes most recently scheduled; each holds a verdict per node tried
# (about 250 bytes each: 4 MB at 1,000 nodes when all 16 have been tried everywhere)

# what the verdict on a node does not depend on: the pod object itself (nothing per node
# reads it) and the names a DaemonSet pod is limited to (which nodes are tried, not how)
_NOT_PER_NODE = frozenset({"pod", "node_names"})
_KEY_FIELDS = tuple(f.name for f in fields(PodState) if f.name not in _NOT_PER_NODE)


class Verdict(NamedTuple):
    """The filters' and scores' result for one pod class on one node, at its generation."""

    generation: int
    plugin: str  # the first failing filter, "" when the pod fits
    reasons: list[str]
    scores: RawScores | None  # None when the pod does not fit


def judge(state: PodState, info: NodeInfo,
          filters: tuple[tuple[str, Filter], ...]) -> Verdict:
    """The node's verdict for the pod of `state`, evaluated now."""
    plugin, reasons = run_filters(state, info, filters)
    return Verdict(info.generation, plugin, reasons,
                   None if reasons else raw_scores(state, info))


def fits_by_verdicts(known: dict[str, Verdict], state: PodState,
                     filters: tuple[tuple[str, Filter], ...],
                     failures: dict[str, tuple[str, list[str]]],
                     scored: list[RawScores]) -> Callable[[NodeInfo], bool]:
    """The scheduler's `fits` for a pod whose class's verdicts are `known` (and whose volumes
    nothing checks): a node's kept verdict while its generation stays, else one judged now
    and kept; a failing node's reasons go to `failures`, a fitting node's raw scores to
    `scored`. Called once for each of the hundreds of nodes a pod is tried on, so it reads
    the verdict by position and nothing else per node."""
    get = known.get
    add = scored.append

    def fits(info: NodeInfo) -> bool:
        name = info.name
        verdict = get(name)
        if verdict is None or verdict[0] != info.generation:
            verdict = known[name] = judge(state, info, filters)
        if verdict[2]:
            failures[name] = (verdict[1], verdict[2])
            return False
        add(verdict[3])
        return True
    return fits


def equivalence_key(state: PodState) -> bytes | None:
    """Equal for pods whose verdicts are equal on every node; None when the PodState does not
    serialize (a quantity beyond 64 bits): such a pod is evaluated on each node afresh."""
    try:
        return orjson.dumps([getattr(state, name) for name in _KEY_FIELDS],
                            option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None


class EquivalenceCache:
    """Per equivalence class (the CLASSES_KEPT most recently used), the verdict on each node
    tried, by node name; a verdict counts only while its generation is the node's."""

    def __init__(self, classes: int = CLASSES_KEPT) -> None:
        self._classes: OrderedDict[bytes, dict[str, Verdict]] = OrderedDict()
        self._size = classes

    def verdicts(self, state: PodState) -> dict[str, Verdict] | None:
        """The class's verdicts by node name, for the caller to read and fill; None when the
        pod has no class (see equivalence_key) or no class is kept (`classes` 0)."""
        key = equivalence_key(state) if self._size else None
        if key is None:
            return None
        known = self._classes.get(key)
        if known is None:
            known = self._classes[key] = {}
            if len(self._classes) > self._size:
                self._classes.popitem(last=False)
        else:
            self._classes.move_to_end(key)
        return known

    def forget_node(self, name: str) -> None:
        """A Node gone: its verdicts would only take room (a new one has a new generation)."""
        for known in self._classes.values():
            known.pop(name, None)
