"""Scheduler filters as upstream's default profile runs them: each takes (PodState, NodeInfo)
and returns the failure reasons (empty = fits); filters_for leaves out those a pod skips, as
upstream's PreFilter does. Pure; scheduler.py aggregates the reasons."""

from __future__ import annotations

from collections.abc import Callable

from k3py.api.nodeselector import node_selector_term_matches
from k3py.server.scheduler.nodeinfo import NodeInfo
from k3py.server.scheduler.podstate import PodState

__all__ = ["FILTERS", "run_filters", "filters_for", "tolerates", "node_selector_term_matches",
           "UNRESOLVABLE", "REASON_AFFINITY", "REASON_NODE_NAME", "REASON_UNSCHEDULABLE",
           "REASON_PORTS", "Filter"]

REASON_NODE_NAME = "node(s) didn't match the requested node name"
REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_PORTS = "node(s) didn't have free ports for the requested pod ports"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"

Reasons = list[str]


def tolerates(toleration: dict, taint: dict) -> bool:
    """v1.Toleration.ToleratesTaint."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    if op == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def _tolerated(tolerations: tuple[dict, ...], taint: dict) -> bool:
    return any(tolerates(t, taint) for t in tolerations)


def untolerated_taint(tolerations: tuple[dict, ...], taints: tuple[dict, ...]) -> dict | None:
    for taint in taints:
        if not _tolerated(tolerations, taint):
            return taint
    return None


def node_selector_matches(state: PodState, node: dict, labels: dict[str, str]) -> bool:
    """spec.nodeSelector and required node affinity (terms ORed)."""
    for k, v in state.node_selector.items():
        if labels.get(k) != v:
            return False
    if state.required_terms is None:
        return True
    return any(node_selector_term_matches(t, node) for t in state.required_terms)


# ---------------------------------------------------------------- the filters


def node_unschedulable(state: PodState, info: NodeInfo) -> Reasons:
    if not info.facts.unschedulable:
        return []
    taint = {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
    if _tolerated(state.tolerations, taint):
        return []
    return [REASON_UNSCHEDULABLE]


def node_name(state: PodState, info: NodeInfo) -> Reasons:
    return [REASON_NODE_NAME] if state.node_name and state.node_name != info.name else []


def taint_toleration(state: PodState, info: NodeInfo) -> Reasons:
    taints = info.facts.hard_taints
    taint = untolerated_taint(state.tolerations, taints) if taints else None
    if taint is None:
        return []
    return [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"]


def node_affinity(state: PodState, info: NodeInfo) -> Reasons:
    return [] if node_selector_matches(state, info.node or {}, info.facts.labels) \
        else [REASON_AFFINITY]


def _ports_conflict(a: tuple[str, str, int], b: tuple[str, str, int]) -> bool:
    if a[1] != b[1] or a[2] != b[2]:
        return False
    return a[0] == b[0] or "0.0.0.0" in (a[0], b[0])


def node_ports(state: PodState, info: NodeInfo) -> Reasons:
    for want in state.host_ports:
        if any(_ports_conflict(want, used) for used in info.ports):
            return [REASON_PORTS]
    return []


def node_resources_fit(state: PodState, info: NodeInfo) -> Reasons:
    """The pod count against allocatable pods, then each requested resource against what
    the node's pods leave of its allocatable; nothing on a node that reports none."""
    facts = info.facts
    alloc = facts.allocatable
    if alloc is None:
        return []
    reasons = []
    if len(info.pods) >= facts.max_pods:
        reasons.append("Too many pods")
    requested = info.requested
    for name, amount in state.fit_requests:
        if amount > alloc.get(name, 0) - requested.get(name, 0):
            reasons.append(f"Insufficient {name}")
    return reasons


Filter = Callable[[PodState, NodeInfo], Reasons]
# Upstream's default order; a node is reported with the reasons of the first filter it fails.
FILTERS: tuple[tuple[str, Filter], ...] = (
    ("NodeUnschedulable", node_unschedulable),
    ("NodeName", node_name),
    ("TaintToleration", taint_toleration),
    ("NodeAffinity", node_affinity),
    ("NodePorts", node_ports),
    ("NodeResourcesFit", node_resources_fit),
)
# Failures preemption cannot fix (upstream: UnschedulableAndUnresolvable).
UNRESOLVABLE = frozenset({"NodeUnschedulable", "NodeName", "TaintToleration", "NodeAffinity",
                          "VolumeBinding"})


def filters_for(state: PodState) -> tuple[tuple[str, Filter], ...]:
    """FILTERS less those with nothing to check for this pod (upstream's PreFilter Skip):
    NodeName without a nodeName, NodeAffinity without a nodeSelector or required affinity,
    NodePorts without host ports."""
    skip = set()
    if not state.node_name:
        skip.add("NodeName")
    if not state.node_selector and state.required_terms is None:
        skip.add("NodeAffinity")
    if not state.host_ports:
        skip.add("NodePorts")
    return tuple((name, fn) for name, fn in FILTERS if name not in skip)


def run_filters(state: PodState, info: NodeInfo,
                filters: tuple[tuple[str, Filter], ...] | None = None) -> tuple[str, Reasons]:
    """("", []) when the pod fits, else (failing filter name, reasons); `filters`: those of
    filters_for(state), computed once per pod by the caller that tries many nodes."""
    if info.node is None:
        return "NodeName", ["node(s) not found"]
    for name, fn in filters_for(state) if filters is None else filters:
        reasons = fn(state, info)
        if reasons:
            return name, reasons
    return "", []
