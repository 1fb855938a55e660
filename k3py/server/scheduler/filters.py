"""Scheduler filters as upstream's default profile runs them: each takes (pod, NodeInfo) and
returns the failure reasons (empty = fits). Pure; scheduler.py aggregates the reasons."""

from __future__ import annotations

from collections.abc import Callable

from k3py.api.nodeselector import node_selector_term_matches
from k3py.server.scheduler.nodeinfo import NodeInfo, pod_host_ports, requests_of

__all__ = ["FILTERS", "run_filters", "tolerates", "untolerated_taint", "node_selector_matches",
           "node_selector_term_matches", "UNRESOLVABLE", "REASON_AFFINITY", "REASON_NODE_NAME",
           "REASON_UNSCHEDULABLE", "REASON_PORTS", "fit_reasons"]

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


def _tolerated(tolerations: list[dict], taint: dict) -> bool:
    return any(tolerates(t, taint) for t in tolerations)


def untolerated_taint(pod: dict, node: dict, effects: tuple[str, ...]) -> dict | None:
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in effects and not _tolerated(tolerations, taint):
            return taint
    return None


def node_selector_matches(pod: dict, node: dict) -> bool:
    """spec.nodeSelector and required node affinity (terms ORed)."""
    spec = pod.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if required is None:
        return True
    terms = required.get("nodeSelectorTerms") or []
    return any(node_selector_term_matches(t, node) for t in terms)


# ---------------------------------------------------------------- the filters


def node_unschedulable(pod: dict, info: NodeInfo) -> Reasons:
    if not ((info.node or {}).get("spec") or {}).get("unschedulable"):
        return []
    taint = {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
    if _tolerated((pod.get("spec") or {}).get("tolerations") or [], taint):
        return []
    return [REASON_UNSCHEDULABLE]


def node_name(pod: dict, info: NodeInfo) -> Reasons:
    want = (pod.get("spec") or {}).get("nodeName")
    return [REASON_NODE_NAME] if want and want != info.name else []


def taint_toleration(pod: dict, info: NodeInfo) -> Reasons:
    taint = untolerated_taint(pod, info.node or {}, ("NoSchedule", "NoExecute"))
    if taint is None:
        return []
    return [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"]


def node_affinity(pod: dict, info: NodeInfo) -> Reasons:
    return [] if node_selector_matches(pod, info.node or {}) else [REASON_AFFINITY]


def _ports_conflict(a: tuple[str, str, int], b: tuple[str, str, int]) -> bool:
    if a[1] != b[1] or a[2] != b[2]:
        return False
    return a[0] == b[0] or "0.0.0.0" in (a[0], b[0])


def node_ports(pod: dict, info: NodeInfo) -> Reasons:
    for want in pod_host_ports(pod):
        if any(_ports_conflict(want, used) for used in info.ports):
            return [REASON_PORTS]
    return []


def fit_reasons(requests: dict[str, int], info: NodeInfo) -> Reasons:
    alloc = info.allocatable()
    if alloc is None:
        return []
    reasons = []
    if len(info.pods) + 1 > alloc.get("pods", 0):
        reasons.append("Too many pods")
    for name, amount in sorted(requests.items()):
        if name == "pods" or amount <= 0:
            continue
        free = alloc.get(name, 0) - info.requested.get(name, 0)
        if amount > free:
            reasons.append(f"Insufficient {name}")
    return reasons


def node_resources_fit(pod: dict, info: NodeInfo) -> Reasons:
    return fit_reasons(requests_of(pod), info)


# Upstream's default order; a node is reported with the reasons of the first filter it fails.
FILTERS: tuple[tuple[str, Callable[[dict, NodeInfo], Reasons]], ...] = (
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


def run_filters(pod: dict, info: NodeInfo) -> tuple[str, Reasons]:
    """("", []) when the pod fits, else (failing filter name, reasons)."""
    if info.node is None:
        return "NodeName", ["node(s) not found"]
    for name, fn in FILTERS:
        reasons = fn(pod, info)
        if reasons:
            return name, reasons
    return "", []
