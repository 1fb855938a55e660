"""Which nodes one scheduling cycle filters: upstream's adaptive percentageOfNodesToScore (the
search stops once enough nodes fit) from a start that rotates across cycles. Pure; used by
scheduler.py, which scores only the nodes found."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["feasible_nodes_to_find", "NodeSampler", "MIN_FEASIBLE_NODES_TO_FIND"]

MIN_FEASIBLE_NODES_TO_FIND = 100  # upstream's minFeasibleNodesToFind
MIN_FEASIBLE_NODES_PERCENTAGE = 5  # upstream's minFeasibleNodesPercentageToFind

T = TypeVar("T")


def feasible_nodes_to_find(total: int) -> int:
    """How many fitting nodes end the filtering, with percentageOfNodesToScore unset (as
    k3py runs upstream's scheduler): 50 %, less 1 % per 125 nodes, at least 5 % and 100
    nodes, so that a pod among 1,000 nodes is scored on 420 of them, not all."""
    if total < MIN_FEASIBLE_NODES_TO_FIND:
        return total
    percentage = max(MIN_FEASIBLE_NODES_PERCENTAGE, 50 - total // 125)
    return max(MIN_FEASIBLE_NODES_TO_FIND, total * percentage // 100)


class NodeSampler:
    """Upstream's findNodesThatPassFilters, one node after the other: each cycle starts where
    the last one stopped (nextStartNodeIndex), so that across pods every node is examined as
    often as the others, and stops once feasible_nodes_to_find nodes fit. When fewer fit,
    every node was tried: the caller's failures then cover them all (the FailedScheduling
    text and what preemption would consider)."""

    def __init__(self) -> None:
        self.next_start = 0

    def find(self, nodes: Sequence[T], fits: Callable[[T], bool]) -> list[T]:
        """The nodes that fit, in the order tried; `fits` is called once per node tried."""
        total = len(nodes)
        if not total:
            return []
        want = feasible_nodes_to_find(total)
        start = self.next_start % total
        found: list[T] = []
        tried = total  # unless enough fit before the last
        # from the start round the list (sliced in C: no index arithmetic per node)
        for k, node in enumerate(itertools.chain(nodes[start:], nodes[:start])):
            if fits(node):
                found.append(node)
                if len(found) == want:
                    tried = k + 1
                    break
        self.next_start = (start + tried) % total
        return found
