"""metrics.k8s.io/v1beta1 NodeMetrics and PodMetrics as metrics-server writes them (usage cpu
in nanocores, memory in bytes, both canonical quantities; timestamp and window of the sample)
and their NAME/CPU/MEMORY/WINDOW table. Pure; k3py.server.metrics fills them from the nodes'
usage reports."""

from __future__ import annotations

import datetime as _dt
from fractions import Fraction

from k3py.api.kinds.registry import NAME_COL, col, register
from k3py.api.quantity import format_quantity, parse_quantity

__all__ = ["GROUP", "VERSION", "usage", "node_metrics", "pod_metrics", "rfc3339"]

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"


def rfc3339(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _window(seconds: float) -> str:
    """A Go duration, as metav1.Duration serializes it ("15s", "1.5s", "1m0s")."""
    ms = round(seconds * 1000)
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms // 1000}" + (f".{ms % 1000:03d}".rstrip("0") if ms % 1000 else "") + "s"
    return f"{minutes}m{secs}" if minutes else secs


def usage(cpu_nanocores: int, memory_bytes: int) -> dict:
    return {"cpu": format_quantity(Fraction(cpu_nanocores, 10 ** 9)),
            "memory": format_quantity(memory_bytes, binary=True)}


def _meta(obj: dict, now: float) -> dict:
    """metrics-server's object metadata: the name (and namespace), the labels of the node or
    pod measured, and the time of the answer as creationTimestamp."""
    md = obj.get("metadata") or {}
    out = {"name": md.get("name"), "creationTimestamp": rfc3339(now)}
    if md.get("namespace"):
        out["namespace"] = md["namespace"]
    if md.get("labels"):
        out["labels"] = dict(md["labels"])
    return out


def node_metrics(node: dict, timestamp: float, window: float, cpu: int, memory: int,
                 now: float) -> dict:
    return {"kind": "NodeMetrics", "apiVersion": f"{GROUP}/{VERSION}",
            "metadata": _meta(node, now), "timestamp": rfc3339(timestamp),
            "window": _window(window), "usage": usage(cpu, memory)}


def pod_metrics(pod: dict, timestamp: float, window: float,
                containers: list[tuple[str, int, int]], now: float) -> dict:
    """`containers`: (name, cpu nanocores, memory bytes) in the pod spec's order."""
    return {"kind": "PodMetrics", "apiVersion": f"{GROUP}/{VERSION}",
            "metadata": _meta(pod, now), "timestamp": rfc3339(timestamp),
            "window": _window(window),
            "containers": [{"name": n, "usage": usage(c, m)} for n, c, m in containers]}


def _total(o: dict, key: str) -> Fraction:
    if "usage" in o:
        return parse_quantity(o["usage"].get(key))
    return sum((parse_quantity(c["usage"].get(key)) for c in o.get("containers") or []),
               Fraction(0))


def _row(o: dict, now: _dt.datetime) -> list:
    cpu = _total(o, "cpu")
    memory = _total(o, "memory")
    return [(o.get("metadata") or {}).get("name"), format_quantity(cpu),
            format_quantity(memory, binary=True), o.get("window") or ""]


_COLUMNS = [NAME_COL, col("CPU", "string", "CPU usage"),
            col("Memory", "string", "Memory usage"),
            col("Window", "string", "The time window the usage was measured over")]
register(GROUP, "NodeMetrics", row=_row, columns=_COLUMNS)
register(GROUP, "PodMetrics", row=_row, columns=_COLUMNS)
