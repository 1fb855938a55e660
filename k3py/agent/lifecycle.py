"""Pure pieces of the kubelet's container lifecycle, kept apart from the syncer's I/O so they
can be unit-tested: resource quantities and QoS class, restart decisions and the crash-loop
backoff (10 s doubling to 300 s, reset after 10 min of running), and Event objects."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from k3py.api.quantity import QuantityError, int_value, parse_quantity

__all__ = ["parse_cpu", "parse_memory", "qos_class", "podman_limits", "should_restart",
           "BACKOFF_INITIAL", "BACKOFF_MAX", "BACKOFF_RESET", "next_backoff", "note_exit",
           "make_event", "rfc3339"]

BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET = 600.0  # a container that ran this long starts its backoff over

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


def should_restart(policy: str, exit_code: int, init: bool) -> bool:
    """Whether an exited container is started again under the pod's restartPolicy (init
    containers are re-run until they succeed unless the policy is Never)."""
    if init:
        return policy != "Never" and exit_code != 0
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def next_backoff(delay: float) -> float:
    """The delay before the restart after the one that waited `delay` (0 = none yet)."""
    return min(BACKOFF_MAX, max(BACKOFF_INITIAL, delay * 2))


def note_exit(entry: dict, exit_key: str, started: float | None, finished: float | None,
              now: float) -> None:
    """Record a new exit of a container in its persisted `entry` (once per exit): the delay
    before it may be restarted and when that is due. Like the kubelet, the first crash
    restarts at once, later ones wait 10 s, 20 s, ... 300 s; a run of 10 min resets that."""
    if entry.get("exit") == exit_key:
        return
    finished = finished or now
    if started is not None and finished - started >= BACKOFF_RESET:
        entry["backoff"] = 0.0
    entry["exit"] = exit_key
    entry["delay"] = float(entry.get("backoff") or 0.0)
    entry["due"] = finished + entry["delay"]


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
