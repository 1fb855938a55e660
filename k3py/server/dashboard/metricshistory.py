"""The last WINDOW seconds of every node's, pod's and pod container's CPU and memory usage, kept
in memory from the nodes' usage reports, so that the dashboard's sparklines and metrics graphs
open with their history and then stream, with no Prometheus (issue 18); bounded in count and
memory.

Fed by the metrics UsageStore (its `listeners`): each report a node's agent sends up the
tunnel every --metrics-resolution gives one point to the node's series and one to each of its
pods', at the report's timestamp. A series is its times and its columns of values: a node has
one, a pod one per container (a pod's figure is its containers' sum; a container missing from a
report has no value at that time). Bounds: a series keeps at most one point per STEP seconds
(under a faster --metrics-resolution the newest point replaces the one before it until STEP has
passed), so at most MAX_POINTS points; a pod's first MAX_CONTAINERS containers have columns of
their own, the rest share OTHERS; at most MAX_COLUMNS columns in all (the series updated longest
ago goes first, and one not updated for WINDOW is dropped), so at most MAX_COLUMNS series; a
point is a float64 time and, per column, two float32 values: at most MAX_COLUMNS * MAX_POINTS *
16 bytes (1.4 MiB) of values. Served on the tab's live websocket as "metrics" subscriptions
(live.py, authorized there as `list` or `get` of metrics.k8s.io nodes or pods); one pod's
subscription also gets its containers' columns."""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from k3py.api import errors
from k3py.server.metrics.store import UsageStore
from k3py.tunnel.protocol import UsageReport

__all__ = ["MetricsHistory", "MetricsQuery", "WINDOW", "STEP", "MAX_POINTS", "MAX_COLUMNS",
           "MAX_CONTAINERS", "OTHERS"]

WINDOW = 900.0  # seconds of history: 15 minutes
STEP = 10.0  # seconds: at most one point kept per STEP (the default resolution is 15 s)
MAX_POINTS = int(WINDOW // STEP) + 1  # per series: one per STEP over the window, both ends
MAX_COLUMNS = 1000  # columns of values: a node's one and a pod's one per container
MAX_CONTAINERS = 8  # a pod's containers with a column of their own
OTHERS = "(other containers)"  # the column the rest of a pod's containers share
NODE = ""  # a node's one column

Key = tuple[str, str, str]  # kind ("nodes" or "pods"), namespace ("" for a node), name
Values = dict[str, tuple[float, float]]  # by column: CPU (nanocores), memory (bytes)
Tell = Callable[[Key, float, Values], None]
_NONE = (math.nan, math.nan)  # no value: the container was not in the report


@dataclass(slots=True)
class _Series:
    times: array = field(default_factory=lambda: array("d"))
    columns: dict[str, tuple[array, array]] = field(default_factory=dict)  # float32 CPU, memory
    seen: float = 0.0  # the server's clock when last updated

    def add(self, at: float, values: Values) -> Values | None:
        """Record a point; the values as kept (folded), or None for a point not newer than the
        last (time only moves on)."""
        times = self.times
        if times and at <= times[-1]:
            return None
        values = self._folded(values)
        for name in values.keys() - self.columns.keys():  # no value before it came
            self.columns[name] = (array("f", [math.nan]) * len(times),
                                  array("f", [math.nan]) * len(times))
        stand_in = len(times) >= 2 and times[-1] - times[-2] < STEP  # the newest, for now
        if stand_in:
            times[-1] = at
        else:
            times.append(at)
        for name, (cpu, memory) in self.columns.items():
            c, m = values.get(name, _NONE)
            if stand_in:
                cpu[-1], memory[-1] = c, m
            else:
                cpu.append(c)
                memory.append(m)
        drop = max(0, len(times) - MAX_POINTS)
        while drop < len(times) and times[drop] < at - WINDOW:
            drop += 1
        if drop:
            del times[:drop]
            for cpu, memory in self.columns.values():
                del cpu[:drop], memory[:drop]
        for name in [n for n, (cpu, _) in self.columns.items()  # gone for a whole window
                     if n not in values and all(math.isnan(c) for c in cpu)]:
            del self.columns[name]
        return values

    def _folded(self, values: Values) -> Values:
        """A column for each container the series has one for, and for new ones while fewer
        than MAX_CONTAINERS have; the rest summed as OTHERS."""
        room = MAX_CONTAINERS - sum(1 for name in self.columns if name != OTHERS)
        out: Values = {}
        for name, (cpu, memory) in sorted(values.items()):
            if name not in self.columns:
                if room > 0:
                    room -= 1
                else:
                    name = OTHERS
            before = out.get(name, (0.0, 0.0))
            out[name] = (before[0] + cpu, before[1] + memory)
        return out

    def wire(self, key: Key, containers: bool) -> dict:
        return _wire(key, self.times, self.columns, containers)


def _whole(values: Sequence[float]) -> list[int | None]:
    return [None if math.isnan(v) else round(v) for v in values]


def _wire(key: Key, times: Sequence[float],
          columns: dict[str, tuple[Sequence[float], Sequence[float]]], containers: bool) -> dict:
    """A series as the page gets it: times in epoch seconds, CPU in nanocores and memory in
    bytes (whole numbers: float32 keeps no more), the columns summed; with `containers`, each
    column too (null where a container has no value)."""
    def total(which: int) -> list[int]:
        return [round(sum(v for v in values if not math.isnan(v)))
                for values in zip(*(column[which] for column in columns.values()), strict=True)] \
            if columns else [0] * len(times)
    out: dict = {"name": key[2], "times": [round(t, 3) for t in times], "cpu": total(0),
                 "memory": total(1)}
    if key[1]:
        out["namespace"] = key[1]
    if containers:
        out["containers"] = {name: {"cpu": _whole(cpu), "memory": _whole(memory)}
                             for name, (cpu, memory) in columns.items()}
    return out


def _points(points: list[tuple[float, Values]]) -> tuple[list[float], dict]:
    """New points (time, values by column) as times and columns."""
    names = sorted({name for _, values in points for name in values})
    return [at for at, _ in points], {
        name: ([values.get(name, _NONE)[0] for _, values in points],
               [values.get(name, _NONE)[1] for _, values in points]) for name in names}


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

    @property
    def containers(self) -> bool:
        """One pod's subscription gets its containers' columns too."""
        return self.kind == "pods" and self.name is not None


class MetricsHistory:
    """Series of (time, CPU, memory) by node and by pod (by container), and their new points
    for followers."""

    def __init__(self, usage: UsageStore | None, clock: Callable[[], float] = time.time) -> None:
        self._series: OrderedDict[Key, _Series] = OrderedDict()  # least recently updated first
        self._columns = 0  # in all series
        self._followers: set[Tell] = set()
        self._clock = clock
        self.served = usage is not None  # not with --disable metrics-server
        if usage is not None:
            usage.listeners.add(self.record)

    def __len__(self) -> int:
        return len(self._series)

    @property
    def columns(self) -> int:
        return self._columns

    def record(self, node: str, report: UsageReport) -> None:
        """Note one node's usage report (a UsageStore listener)."""
        now = self._clock()
        self._add(("nodes", "", node), report.timestamp,
                  {NODE: (report.node.cpu, report.node.memory)}, now)
        for pod in report.pods:
            self._add(("pods", pod.namespace, pod.name), report.timestamp,
                      {name: (u.cpu, u.memory) for name, u in pod.containers.items()}, now)
        while self._series:  # series no report has updated for a whole window
            oldest = next(iter(self._series.values()))
            if oldest.seen >= now - WINDOW:
                break
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        _key, series = self._series.popitem(last=False)
        self._columns -= len(series.columns)

    def _add(self, key: Key, at: float, values: Values, now: float) -> None:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        before = len(series.columns)
        kept = series.add(at, values)
        self._columns += len(series.columns) - before
        if kept is None:
            return
        series.seen = now
        self._series.move_to_end(key)
        while self._columns > MAX_COLUMNS:
            self._drop_oldest()
        for tell in self._followers:
            tell(key, at, kept)

    def series(self, query: MetricsQuery) -> dict[str, dict]:
        """The history of every series `query` matches, by name (pods: namespace/name)."""
        return {_label(key): s.wire(key, query.containers) for key, s in self._series.items()
                if query.matches(key)}

    async def follow(self, query: MetricsQuery, interval: float) -> AsyncIterator[dict]:
        """{"reset": True, "series": history} first, then {"series": new points} as reports
        come, at most once per `interval`."""
        if not self.served:
            raise errors.StatusError(404, "NotFound", "the metrics API is not served "
                                                      "(--disable metrics-server)")
        pending: dict[Key, list[tuple[float, Values]]] = {}
        ready = asyncio.Event()

        def tell(key: Key, at: float, values: Values) -> None:
            if query.matches(key):
                points = pending.setdefault(key, [])
                points.append((at, values))
                del points[:-MAX_POINTS]  # a tab that does not read keeps no more
                ready.set()
        self._followers.add(tell)
        try:
            yield {"reset": True, "series": self.series(query)}
            while True:
                await ready.wait()
                ready.clear()
                batch = {_label(key): _wire(key, *_points(points), query.containers)
                         for key, points in pending.items()}
                pending.clear()
                yield {"series": batch}
                await asyncio.sleep(interval)
        finally:
            self._followers.discard(tell)
