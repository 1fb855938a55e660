"""The last WINDOW seconds of each numeric twin's reported values, kept in memory so that a
device plot opens with its history and then streams (issue 18); bounded in count and memory.

One watch of every Device in the server's own watch fan-out (Registry.watch), started with the
server and stopped with it, records a point when a twin's reported value or its timestamp
changes (a value that is not a finite number is skipped). Bounds: MAX_POINTS per twin (older
points and points past WINDOW go first), MAX_TWINS twins (the one updated longest ago goes
first), each point two float64s: at most MAX_TWINS * MAX_POINTS * 16 bytes (1.5 MiB) of
values. Served by the dashboard's /dashboard/api/twinhistory, authorized as `get devices`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field

from k3py.api import errors
from k3py.server.registry import Registry

__all__ = ["TwinHistory", "WINDOW", "MAX_POINTS", "MAX_TWINS"]

log = logging.getLogger("k3py.dashboard")

WINDOW = 600.0  # seconds of history
MAX_POINTS = 600  # per twin: one a second over the window
MAX_TWINS = 160
DEVICES = ("devices.kubeedge.io", "devices")

TwinKey = tuple[str, str, str]  # namespace, device, property


@dataclass
class _Ring:
    times: array = field(default_factory=lambda: array("d"))
    values: array = field(default_factory=lambda: array("d"))
    stamp: str = ""  # the reported timestamp (or value) last recorded: a repeat is no point

    def add(self, at: float, value: float) -> None:
        self.times.append(at)
        self.values.append(value)
        drop = max(0, len(self.times) - MAX_POINTS)
        while drop < len(self.times) and self.times[drop] < at - WINDOW:
            drop += 1
        if drop:
            del self.times[:drop]
            del self.values[:drop]


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class TwinHistory:
    """Rings of reported values by (namespace, device, property)."""

    def __init__(self, clock=time.time) -> None:
        self._rings: OrderedDict[TwinKey, _Ring] = OrderedDict()
        self._clock = clock
        self._task: asyncio.Task | None = None

    def record(self, device: dict) -> None:
        """Note the reported values of one Device (as stored, or from a watch event)."""
        md = device.get("metadata") or {}
        for twin in (device.get("status") or {}).get("twins") or []:
            reported = twin.get("reported") if isinstance(twin, dict) else None
            if not isinstance(reported, dict):
                continue
            value = _number(reported.get("value"))
            if value is None:
                continue
            stamp = str((reported.get("metadata") or {}).get("timestamp") or "")
            key = (md.get("namespace", ""), md.get("name", ""), str(twin.get("propertyName")))
            ring = self._rings.get(key)
            if ring is None:
                ring = self._rings[key] = _Ring()
                if len(self._rings) > MAX_TWINS:
                    self._rings.popitem(last=False)
            marker = stamp or f"value:{reported.get('value')}"
            if marker == ring.stamp:
                continue
            ring.stamp = marker
            millis = _number(stamp)
            ring.add(millis / 1000 if millis else self._clock(), value)
            self._rings.move_to_end(key)

    def forget(self, namespace: str, name: str) -> None:
        for key in [k for k in self._rings if k[:2] == (namespace, name)]:
            del self._rings[key]

    def points(self, namespace: str, name: str, prop: str) -> tuple[list[float], list[float]]:
        """(times in epoch seconds, values) of the last WINDOW seconds, oldest first."""
        ring = self._rings.get((namespace, name, prop))
        if ring is None:
            return [], []
        since = self._clock() - WINDOW
        start = next((i for i, t in enumerate(ring.times) if t >= since), len(ring.times))
        return ring.times[start:].tolist(), ring.values[start:].tolist()

    # ---------------------------------------------------------------- the watch

    def start(self, registry: Registry) -> None:
        self._task = asyncio.create_task(self._follow(registry), name="twin-history")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def _follow(self, registry: Registry) -> None:
        """Watch every Device from its current state on; after an end, resume (from the
        start again after a 410); wait for the kind while its CRD is not served yet."""
        rv = ""
        while True:
            res = registry.resources.find(*DEVICES)
            if res is None:
                await asyncio.sleep(1.0)
                continue
            try:
                async for etype, obj in await registry.watch(res, None, resource_version=rv):
                    md = obj.get("metadata") or {}
                    rv = str(md.get("resourceVersion") or rv)
                    if etype == "DELETED":
                        self.forget(md.get("namespace", ""), md.get("name", ""))
                    elif etype in ("ADDED", "MODIFIED"):
                        self.record(obj)
            except errors.StatusError as e:
                if e.code != 410:
                    log.warning("twin history: the Device watch failed: %s", e.message)
                    await asyncio.sleep(1.0)
                rv = ""
            except Exception:  # noqa: BLE001 - the history must outlive one bad event
                log.exception("twin history: the Device watch failed")
                await asyncio.sleep(1.0)
                rv = ""
