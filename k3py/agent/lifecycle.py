"""Pure pieces of the kubelet's container lifecycle, kept apart from the pod syncer's I/O so
they can be unit-tested: resource quantities, QoS class, podman limits and Event objects (the
restart policy and crash-loop backoff are pods/restarts.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from k3py.api.quantity import QuantityError, int_value, parse_quantity

__all__ = ["parse_cpu", "parse_memory", "qos_class", "podman_limits", "make_event",
           "dropped_events_event", "rfc3339"]

def parse_cpu(value) -> float | None:
    """A CPU quantity ("500m", "1", 0.5) in cores; None when absent or malformed."""
    if value is None:
        return None
    try:
        return float(parse_quantity(value))
    except QuantityError:
        return None


def parse_memory(value) -> int | None:
    """A memory quantity ("128Mi", "1G", "1e6", 1000) in bytes; None when absent/malformed."""
    if value is None:
        return None
    try:
        return int_value(value)
    except QuantityError:
        return None


def _cpu_mem(rl: dict | None) -> dict[str, float]:
    out = {}
    for key, parse in (("cpu", parse_cpu), ("memory", parse_memory)):
        v = parse((rl or {}).get(key))
        if v:
            out[key] = float(v)
    return out


def qos_class(pod: dict) -> str:
    """Guaranteed: every container has cpu and memory limits, requests (defaulting to the
    limits) equal to them; BestEffort: no container requests or limits cpu/memory;
    Burstable otherwise (upstream's GetPodQOS, per container)."""
    spec = pod.get("spec") or {}
    any_set, guaranteed = False, True
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        res = c.get("resources") or {}
        limits, requests = _cpu_mem(res.get("limits")), _cpu_mem(res.get("requests"))
        if limits or requests:
            any_set = True
        if set(limits) != {"cpu", "memory"} or any(
                requests.get(k, limits[k]) != limits[k] for k in limits):
            guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def podman_limits(container: dict) -> dict:
    """{cpus, memory} for `podman run` from the container's resource limits."""
    limits = (container.get("resources") or {}).get("limits") or {}
    out: dict = {}
    cpu, mem = parse_cpu(limits.get("cpu")), parse_memory(limits.get("memory"))
    if cpu:
        out["cpus"] = f"{cpu:.3f}".rstrip("0").rstrip(".")
    if mem:
        out["memory"] = mem
    return out


def rfc3339(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def make_event(pod: dict, *, name: str, reason: str, message: str, type_: str,
               container: str | None, init: bool, node: str, count: int, first: float,
               last: float) -> dict:
    """A core/v1 Event about `pod` as the kubelet reports it."""
    md = pod.get("metadata") or {}
    obj = {"kind": "Pod", "apiVersion": "v1", "namespace": md.get("namespace"),
           "name": md.get("name"), "uid": md.get("uid")}
    if container:
        key = "initContainers" if init else "containers"
        obj["fieldPath"] = f"spec.{key}{{{container}}}"
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": md.get("namespace")},
            "involvedObject": obj, "reason": reason, "message": message, "type": type_,
            "source": {"component": "kubelet", "host": node},
            "reportingComponent": "kubelet", "reportingInstance": node,
            "firstTimestamp": rfc3339(first), "lastTimestamp": rfc3339(last), "count": count}


def dropped_events_event(node: str, *, name: str, dropped: int, cap: int, reports: int,
                         first: float) -> dict:
    """A Warning Event on the Node: `dropped` Events were dropped since the agent started,
    because more than `cap` waited for the server; one Event object per agent run (`name`),
    its count the number of reports (the kubelet's Events about its Node go to "default",
    with the node name as uid)."""
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "default"},
            "involvedObject": {"kind": "Node", "apiVersion": "v1", "name": node, "uid": node},
            "reason": "EventsDropped", "type": "Warning",
            "message": f"{dropped} Events dropped since the agent started: at most {cap} wait "
                       f"for the server while it cannot be reached, the oldest go first",
            "source": {"component": "kubelet", "host": node},
            "reportingComponent": "kubelet", "reportingInstance": node,
            "firstTimestamp": rfc3339(first), "lastTimestamp": rfc3339(), "count": reports}
