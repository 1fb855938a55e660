"""The last WINDOW seconds of every node's and pod's CPU and memory usage, kept in memory from
the nodes' usage reports, so that the dashboard's sparklines and metrics graphs open with their
history and then stream, with no Prometheus (issue 18); bounded in count and memory.

Fed by the metrics UsageStore (its `listeners`): each report a node's agent sends up the
tunnel every --metrics-resolution gives one point to the node's series and one to each of its
pods' (the containers summed), at the report's timestamp. Bounds: a series keeps at most one
point per STEP seconds (under a faster --metrics-resolution the newest point replaces the one
before it until STEP has passed), so at most MAX_POINTS points; at most MAX_SERIES series (the
one updated longest ago goes first, and one not updated for WINDOW is dropped); a point is a
float64 time and two float32 values, 16 bytes: at most MAX_SERIES * MAX_POINTS * 16 bytes
(1.4 MiB) of values. Served on the tab's live websocket as "metrics" subscriptions (live.py,
authorized there as `list` or `get` of metrics.k8s.io nodes or pods)."""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from k3py.api import errors
from k3py.server.metrics.store import UsageStore
from k3py.tunnel.protocol import UsageReport

__all__ = ["MetricsHistory", "MetricsQuery", "WINDOW", "STEP", "MAX_POINTS", "MAX_SERIES"]

WINDOW = 900.0  # seconds of history: 15 minutes
STEP = 10.0  # seconds: at most one point kept per STEP (the default resolution is 15 s)
MAX_POINTS = int(WINDOW // STEP) + 1  # per series: one per STEP over the window, both ends
MAX_SERIES = 1000  # nodes and pods together

Key = tuple[str, str, str]  # kind ("nodes" or "pods"), namespace ("" for a node), name
Tell = Callable[[Key, float, float, float], None]


@dataclass(slots=True)
class _Series:
    times: array = field(default_factory=lambda: array("d"))
    cpu: array = field(default_factory=lambda: array("f"))  # nanocores
    memory: array = field(default_factory=lambda: array("f"))  # bytes
    seen: float = 0.0  # the server's clock when last updated

    def add(self, at: float, cpu: float, memory: float) -> bool:
        """Record a point (False for one not newer than the last: time only moves on)."""
        times = self.times
        if times and at <= times[-1]:
            return False
        if len(times) >= 2 and times[-1] - times[-2] < STEP:  # the newest stands in, for now
            times[-1], self.cpu[-1], self.memory[-1] = at, cpu, memory
        else:
            times.append(at)
            self.cpu.append(cpu)
            self.memory.append(memory)
        drop = max(0, len(times) - MAX_POINTS)
        while drop < len(times) and times[drop] < at - WINDOW:
            drop += 1
        if drop:
            del times[:drop], self.cpu[:drop], self.memory[:drop]
        return True

    def wire(self, key: Key) -> dict:
        return _wire(key, self.times, self.cpu, self.memory)


def _wire(key: Key, times, cpu, memory) -> dict:
    """A series as the page gets it: times in epoch seconds, CPU in nanocores, memory in
    bytes (whole numbers: float32 keeps no more)."""
    out = {"name": key[2], "times": [round(t, 3) for t in times],
           "cpu": [round(c) for c in cpu], "memory": [round(m) for m in memory]}
    if key[1]:
        out["namespace"] = key[1]
    return out


def _label(key: Key) -> str:
    """The series' name on the wire: the node's name, or a pod's namespace/name."""
    return f"{key[1]}/{key[2]}" if key[1] else key[2]


@dataclass(frozen=True, slots=True)
class MetricsQuery:
    """What a subscription follows: every node, one node, the pods of one namespace or all,
    or one pod."""
    kind: str
    namespace: str | None = None
    name: str | None = None

    @classmethod
    def parse(cls, msg: dict) -> MetricsQuery:
        """From the tab's {"op": "metrics", "kind": "nodes"|"pods", "namespace"?, "name"?}."""
        kind = msg.get("kind")
        if kind not in ("nodes", "pods"):
            raise errors.bad_request('a metrics subscription needs "kind": "nodes" or "pods"')
        namespace, name = (str(msg.get(k) or "") or None for k in ("namespace", "name"))
        if kind == "nodes" and namespace:
            raise errors.bad_request("node metrics have no namespace")
        if kind == "pods" and name and not namespace:
            raise errors.bad_request("a pod's metrics need its namespace")
        return cls(kind, namespace, name)

    @property
    def verb(self) -> str:
        return "get" if self.name else "list"

    def matches(self, key: Key) -> bool:
        return key[0] == self.kind and (self.namespace is None or key[1] == self.namespace) \
            and (self.name is None or key[2] == self.name)


class MetricsHistory:
    """Series of (time, CPU, memory) by node and by pod, and their new points for followers."""

    def __init__(self, usage: UsageStore | None, clock: Callable[[], float] = time.time) -> None:
        self._series: OrderedDict[Key, _Series] = OrderedDict()  # least recently updated first
        self._followers: set[Tell] = set()
        self._clock = clock
        self.served = usage is not None  # not with --disable metrics-server
        if usage is not None:
            usage.listeners.add(self.record)

    def __len__(self) -> int:
        return len(self._series)

    def record(self, node: str, report: UsageReport) -> None:
        """Note one node's usage report (a UsageStore listener)."""
        now = self._clock()
        self._add(("nodes", "", node), report.timestamp, report.node.cpu, report.node.memory,
                  now)
        for pod in report.pods:
            usage = pod.containers.values()
            self._add(("pods", pod.namespace, pod.name), report.timestamp,
                      sum(u.cpu for u in usage), sum(u.memory for u in usage), now)
        while self._series:  # series no report has updated for a whole window
            oldest = next(iter(self._series.values()))
            if oldest.seen >= now - WINDOW:
                break
            self._series.popitem(last=False)

    def _add(self, key: Key, at: float, cpu: float, memory: float, now: float) -> None:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
            if len(self._series) > MAX_SERIES:
                self._series.popitem(last=False)
        if not series.add(at, cpu, memory):
            return
        series.seen = now
        self._series.move_to_end(key)
        for tell in self._followers:
            tell(key, at, cpu, memory)

    def series(self, query: MetricsQuery) -> dict[str, dict]:
        """The history of every series `query` matches, by name (pods: namespace/name)."""
        return {_label(key): s.wire(key) for key, s in self._series.items()
                if query.matches(key)}

    async def follow(self, query: MetricsQuery, interval: float) -> AsyncIterator[dict]:
        """{"reset": True, "series": history} first, then {"series": new points} as reports
        come, at most once per `interval`."""
        if not self.served:
            raise errors.StatusError(404, "NotFound", "the metrics API is not served "
                                                      "(--disable metrics-server)")
        pending: dict[Key, tuple[list, list, list]] = {}
        ready = asyncio.Event()

        def tell(key: Key, at: float, cpu: float, memory: float) -> None:
            if query.matches(key):
                points = pending.setdefault(key, ([], [], []))
                for column, value in zip(points, (at, cpu, memory), strict=True):
                    column.append(value)
                    del column[:-MAX_POINTS]  # a tab that does not read keeps no more
                ready.set()
        self._followers.add(tell)
        try:
            yield {"reset": True, "series": self.series(query)}
            while True:
                await ready.wait()
                ready.clear()
                batch = {_label(key): _wire(key, *points) for key, points in pending.items()}
                pending.clear()
                yield {"series": batch}
                await asyncio.sleep(interval)
        finally:
            self._followers.discard(tell)
