"""What one scheduling cycle reads of the pod being scheduled, once: upstream's CycleState as
its PreFilter and PreScore plugins fill it. Filters and scores take this, not the pod, so
nothing of the pod is parsed again for each of the hundreds of nodes it is tried on."""

from __future__ import annotations

from dataclasses import dataclass

from k3py.server.scheduler.nodeinfo import (
    PodUsage,
    Resources,
    pod_controller,
    pod_host_ports,
    pod_requests,
)

__all__ = ["PodState", "required_node_names"]


def required_node_names(required: dict | None) -> frozenset[str] | None:
    """NodeAffinity's PreFilterResult: the only nodes a pod's required node affinity can
    match by `metadata.name In` (a DaemonSet pod's one node), None when any term can match
    other nodes (terms are ORed; the requirements of one term ANDed). An empty set: the
    terms conflict, no node can match."""
    terms = (required or {}).get("nodeSelectorTerms") or []
    if not terms:  # no term: no restriction (upstream's validation refuses it)
        return None
    names: set[str] = set()
    for term in terms:
        term_names: set[str] | None = None
        for r in term.get("matchFields") or []:
            if r.get("key") == "metadata.name" and r.get("operator") == "In":
                values = set(r.get("values") or [])
                term_names = values if term_names is None else term_names & values
        if term_names is None:
            return None
        names |= term_names
    return frozenset(names)


@dataclass(frozen=True, slots=True)
class PodState:
    pod: dict
    requests: Resources  # upstream's effective requests (NodeResourcesFit's PreFilter)
    fit_requests: tuple[tuple[str, int], ...]  # those the fit checks: > 0, not pods, sorted
    non_zero_requests: Resources  # with the scoring defaults (the scores' PreScore)
    node_name: str
    tolerations: tuple[dict, ...]
    node_selector: dict[str, str]
    required_terms: tuple[dict, ...] | None  # required node affinity; None without one
    node_names: frozenset[str] | None  # required_node_names: only these nodes are tried
    host_ports: tuple[tuple[str, str, int], ...]
    preferred: tuple[dict, ...]  # preferred node affinity terms
    soft_tolerations: tuple[dict, ...]  # the tolerations that apply to PreferNoSchedule
    owner: tuple[str, str] | None  # its controller, for SelectorSpread

    @classmethod
    def of(cls, pod: dict) -> PodState:
        spec = pod.get("spec") or {}
        node_affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
        required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
        tolerations = tuple(spec.get("tolerations") or [])
        requests = pod_requests(pod)
        return cls(
            pod=pod, requests=requests,
            fit_requests=tuple(sorted((name, amount) for name, amount in requests.items()
                                      if name != "pods" and amount > 0)),
            non_zero_requests=pod_requests(pod, non_zero=True),
            node_name=spec.get("nodeName") or "", tolerations=tolerations,
            node_selector=spec.get("nodeSelector") or {},
            required_terms=None if required is None
            else tuple(required.get("nodeSelectorTerms") or []),
            node_names=required_node_names(required),
            host_ports=tuple(pod_host_ports(pod)),
            preferred=tuple(node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution")
                            or []),
            soft_tolerations=tuple(t for t in tolerations if (t.get("effect")
                                                               or "PreferNoSchedule")
                                   == "PreferNoSchedule"),
            owner=pod_controller(pod))

    def usage(self) -> PodUsage:
        """What the pod takes of the node it is placed on (the assumed placement)."""
        return PodUsage(self.requests, self.non_zero_requests, self.host_ports, self.owner)
