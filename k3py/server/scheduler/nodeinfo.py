"""What the scheduler knows about one node: the Node object, the pods on it and their summed
requests and host ports. Pure; kept current by scheduler.py and read by filters and scores."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

from k3py.api.quantity import QuantityError, int_value, milli_value

__all__ = ["NodeInfo", "NodeFacts", "PodUsage", "pod_requests", "pod_host_ports",
           "node_allocatable", "pod_key", "pod_controller", "DEFAULT_MILLI_CPU",
           "DEFAULT_MEMORY"]

# NodeInfo.generation: one sequence for every NodeInfo (upstream's nextGeneration), so that a
# node deleted and made again never shows a number a verdict about the old one was kept with
_generations = itertools.count(1)

# Upstream's non-zero defaults used only for scoring pods that request nothing.
DEFAULT_MILLI_CPU = 100
DEFAULT_MEMORY = 200 * 1024 * 1024

Resources = dict[str, int]  # "cpu" in millicores, everything else in whole units


def pod_key(pod: dict) -> str:
    md = pod.get("metadata") or {}
    return f"{md.get('namespace')}/{md.get('name')}"


def _amount(name: str, value) -> int:
    try:
        return milli_value(value) if name == "cpu" else int_value(value)
    except QuantityError:
        return 0


def _container_requests(c: dict) -> Resources:
    res = c.get("resources") or {}
    # upstream defaulting copies limits into missing requests
    merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
    return {k: _amount(k, v) for k, v in merged.items()}


def _add(into: Resources, other: Resources) -> None:
    for k, v in other.items():
        into[k] = into.get(k, 0) + v


def _max(into: Resources, other: Resources) -> None:
    for k, v in other.items():
        if v > into.get(k, 0):
            into[k] = v


def _default_missing(requests: Resources) -> None:
    """Upstream's scoring defaults for a container that requests no cpu or no memory (a
    request set to 0 stays 0, as upstream's GetNonzeroRequestForResource keeps it)."""
    requests.setdefault("cpu", DEFAULT_MILLI_CPU)
    requests.setdefault("memory", DEFAULT_MEMORY)


def pod_requests(pod: dict, non_zero: bool = False) -> Resources:
    """Effective requests: max(sum of containers + sidecars, each init container in turn)
    plus pod overhead. `non_zero` substitutes upstream's scoring defaults for cpu/memory."""
    spec = pod.get("spec") or {}
    total: Resources = {}
    for c in spec.get("containers") or []:
        r = _container_requests(c)
        if non_zero:
            _default_missing(r)
        _add(total, r)
    sidecars: Resources = {}
    init_peak: Resources = {}
    for c in spec.get("initContainers") or []:
        r = _container_requests(c)
        if non_zero:
            _default_missing(r)
        if c.get("restartPolicy") == "Always":
            _add(sidecars, r)
            _max(init_peak, sidecars)
        else:
            running = dict(sidecars)
            _add(running, r)
            _max(init_peak, running)
    _add(total, sidecars)
    _max(total, init_peak)
    for k, v in (spec.get("overhead") or {}).items():
        total[k] = total.get(k, 0) + _amount(k, v)
    return {k: v for k, v in total.items() if v}


def pod_host_ports(pod: dict) -> list[tuple[str, str, int]]:
    out = []
    spec = pod.get("spec") or {}
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        for p in c.get("ports") or []:
            hp = p.get("hostPort") or 0
            if hp > 0:
                out.append((p.get("hostIP") or "0.0.0.0", p.get("protocol") or "TCP", int(hp)))
    return out


def pod_controller(pod: dict) -> tuple[str, str] | None:
    """(namespace, uid of the controlling owner) of a pod; None if nothing controls it."""
    md = pod.get("metadata") or {}
    for ref in md.get("ownerReferences") or []:
        if ref.get("controller"):
            return md.get("namespace") or "", ref.get("uid") or ""
    return None


def node_allocatable(node: dict) -> Resources | None:
    """Allocatable (or capacity) of a node; None when the node reports neither (a bare test
    node created through the API), which the resource filter treats as unlimited."""
    status = node.get("status") or {}
    alloc = status.get("allocatable") or status.get("capacity")
    if not alloc:
        return None
    return {k: _amount(k, v) for k, v in alloc.items()}


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the filters and scores read of one Node object, parsed once per object (a Node
    update is a new object): not again for each pod against each node."""

    allocatable: Resources | None  # None: the node reports none (unlimited)
    max_pods: int
    cpu: int  # allocatable millicores, 0 when unknown
    memory: int
    labels: dict[str, str]
    unschedulable: bool
    hard_taints: tuple[dict, ...]  # NoSchedule and NoExecute: the filter's
    soft_taints: tuple[dict, ...]  # PreferNoSchedule: the score's

    @classmethod
    def of(cls, node: dict | None) -> NodeFacts:
        node = node or {}
        alloc = node_allocatable(node)
        spec = node.get("spec") or {}
        taints = spec.get("taints") or []
        have = alloc or {}
        return cls(allocatable=alloc, max_pods=have.get("pods", 0), cpu=have.get("cpu", 0),
                   memory=have.get("memory", 0),
                   labels=(node.get("metadata") or {}).get("labels") or {},
                   unschedulable=bool(spec.get("unschedulable")),
                   hard_taints=tuple(t for t in taints
                                     if t.get("effect") in ("NoSchedule", "NoExecute")),
                   soft_taints=tuple(t for t in taints
                                     if t.get("effect") == "PreferNoSchedule"))


@dataclass(frozen=True, slots=True)
class PodUsage:
    """What one pod on a node adds to its NodeInfo, kept so that taking the pod off again
    (every status update of a bound pod is an off and on) does not compute it a second time."""

    requests: Resources
    non_zero_requests: Resources
    ports: tuple[tuple[str, str, int], ...]
    owner: tuple[str, str] | None

    @classmethod
    def of(cls, pod: dict) -> PodUsage:
        return cls(pod_requests(pod), pod_requests(pod, non_zero=True),
                   tuple(pod_host_ports(pod)), pod_controller(pod))


class NodeInfo:
    """One node's Node object (and its NodeFacts, parsed again only when a new object is
    set), the pods on it and their summed requests, host ports and controllers.
    `generation` moves whenever something a filter or score reads of it changes (a pod on or
    off, other NodeFacts or the Node gone), and only then: equivalence.py keeps each pod
    class's verdict on the node while it stays."""

    def __init__(self, name: str, node: dict | None = None) -> None:
        self.name = name
        self.generation = next(_generations)
        self._node: dict | None = None
        self.facts = NodeFacts.of(None)
        self.pods: dict[str, PodUsage] = {}
        self.requested: Resources = {}
        self.non_zero_requested: Resources = {}
        self.ports: list[tuple[str, str, int]] = []
        # pods on the node per controller (SelectorSpread's count, without a walk of every pod)
        self.controlled: Counter[tuple[str, str]] = Counter()
        self.node = node

    @property
    def node(self) -> dict | None:
        return self._node

    @node.setter
    def node(self, node: dict | None) -> None:
        """A new Node object; most (its heartbeats) leave the facts as they were, and then
        the generation too (run_filters also reads whether there is a Node at all)."""
        facts = NodeFacts.of(node)
        if facts != self.facts or (node is None) != (self._node is None):
            self.facts = facts
            self.generation = next(_generations)
        self._node = node

    def __repr__(self) -> str:
        return f"NodeInfo({self.name!r}, pods={len(self.pods)})"

    def add_pod(self, pod: dict) -> None:
        self.add(pod_key(pod), PodUsage.of(pod))

    def add(self, key: str, usage: PodUsage) -> None:
        """The pod `key` on this node, taking `usage`."""
        if key in self.pods:
            self.remove_pod(key)
        self.pods[key] = usage
        self.generation = next(_generations)
        _add(self.requested, usage.requests)
        _add(self.non_zero_requested, usage.non_zero_requests)
        self.ports.extend(usage.ports)
        if usage.owner is not None:
            self.controlled[usage.owner] += 1

    def remove_pod(self, key: str) -> None:
        usage = self.pods.pop(key, None)
        if usage is None:
            return
        self.generation = next(_generations)
        for k, v in usage.requests.items():
            self.requested[k] = self.requested.get(k, 0) - v
        for k, v in usage.non_zero_requests.items():
            self.non_zero_requested[k] = self.non_zero_requested.get(k, 0) - v
        for p in usage.ports:
            self.ports.remove(p)
        if usage.owner is not None:
            self.controlled[usage.owner] -= 1
            if not self.controlled[usage.owner]:
                del self.controlled[usage.owner]
