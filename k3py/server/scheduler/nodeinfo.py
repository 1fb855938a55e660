"""What the scheduler knows about one node: the Node object, the pods on it and their summed
requests and host ports. Pure; kept current by scheduler.py and read by filters and scores."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from k3py.api.quantity import QuantityError, int_value, milli_value

__all__ = ["NodeInfo", "pod_requests", "requests_of", "pod_host_ports", "node_allocatable",
           "pod_key",
           "pod_controller", "DEFAULT_MILLI_CPU", "DEFAULT_MEMORY"]

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


def pod_requests(pod: dict, non_zero: bool = False) -> Resources:
    """Effective requests: max(sum of containers + sidecars, each init container in turn)
    plus pod overhead. `non_zero` substitutes upstream's scoring defaults for cpu/memory."""
    spec = pod.get("spec") or {}
    total: Resources = {}
    for c in spec.get("containers") or []:
        r = _container_requests(c)
        if non_zero:
            r.setdefault("cpu", 0)
            r.setdefault("memory", 0)
            r["cpu"] = r["cpu"] or DEFAULT_MILLI_CPU
            r["memory"] = r["memory"] or DEFAULT_MEMORY
        _add(total, r)
    sidecars: Resources = {}
    init_peak: Resources = {}
    for c in spec.get("initContainers") or []:
        r = _container_requests(c)
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


# the last pod's requests (with and without the scoring defaults), held with the pod itself:
# the scheduler filters and scores one pod against up to hundreds of nodes in a row (upstream
# computes them once, in PreFilter), and informer objects are never changed in place
_last_requests: dict[bool, tuple[dict, Resources]] = {}


def requests_of(pod: dict, non_zero: bool = False) -> Resources:
    """pod_requests(pod, non_zero), computed once for the pod being scheduled."""
    last = _last_requests.get(non_zero)
    if last is not None and last[0] is pod:
        return last[1]
    got = pod_requests(pod, non_zero)
    _last_requests[non_zero] = (pod, got)
    return got


def node_allocatable(node: dict) -> Resources | None:
    """Allocatable (or capacity) of a node; None when the node reports neither (a bare test
    node created through the API), which the resource filter treats as unlimited."""
    status = node.get("status") or {}
    alloc = status.get("allocatable") or status.get("capacity")
    if not alloc:
        return None
    return {k: _amount(k, v) for k, v in alloc.items()}


@dataclass
class NodeInfo:
    name: str
    node: dict | None = None
    pods: dict[str, dict] = field(default_factory=dict)
    requested: Resources = field(default_factory=dict)
    non_zero_requested: Resources = field(default_factory=dict)
    ports: list[tuple[str, str, int]] = field(default_factory=list)
    # pods on the node per controller (SelectorSpread's count, without a walk of every pod)
    controlled: Counter[tuple[str, str]] = field(default_factory=Counter)
    # (the Node object, its allocatable): parsed once per Node object, not per pod scheduled
    _allocatable: tuple[dict | None, Resources | None] = field(
        default=(None, None), repr=False, compare=False)

    def allocatable(self) -> Resources | None:
        """node_allocatable of the node, None without one."""
        node, alloc = self._allocatable
        if node is not self.node or node is None:
            alloc = node_allocatable(self.node) if self.node is not None else None
            self._allocatable = (self.node, alloc)
        return alloc

    def add_pod(self, pod: dict) -> None:
        key = pod_key(pod)
        if key in self.pods:
            self.remove_pod(key)
        self.pods[key] = pod
        _add(self.requested, pod_requests(pod))
        _add(self.non_zero_requested, pod_requests(pod, non_zero=True))
        self.ports.extend(pod_host_ports(pod))
        if (owner := pod_controller(pod)) is not None:
            self.controlled[owner] += 1

    def remove_pod(self, key: str) -> None:
        pod = self.pods.pop(key, None)
        if pod is None:
            return
        for k, v in pod_requests(pod).items():
            self.requested[k] = self.requested.get(k, 0) - v
        for k, v in pod_requests(pod, non_zero=True).items():
            self.non_zero_requested[k] = self.non_zero_requested.get(k, 0) - v
        for p in pod_host_ports(pod):
            self.ports.remove(p)
        if (owner := pod_controller(pod)) is not None:
            self.controlled[owner] -= 1
            if not self.controlled[owner]:
                del self.controlled[owner]
