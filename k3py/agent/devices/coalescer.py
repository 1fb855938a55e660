"""The report coalescer, with no I/O: at most one report up per device per report cycle,
merged from the reports (twinrecords.py) the twin (twin.py) hands it.

Driven by the event bus (eventbus.py), which adds reports and sends what is due; the agent's
device part (manager.py) reads what is pending to persist it and forgets removed devices."""

from __future__ import annotations

import math

from k3py.agent.devices.twinrecords import DEFAULT_REPORT_CYCLE, DeviceKey, Report

__all__ = ["ReportCoalescer"]


class ReportCoalescer:
    """At most one report per device per report cycle: reports arriving within a cycle are
    merged (newest value per twin wins, nothing that is the latest is dropped). The first
    report after a quiet cycle is due at once, so a slow device is not delayed."""

    def __init__(self) -> None:
        self._pending: dict[DeviceKey, tuple[Report, float]] = {}
        self._last_sent: dict[DeviceKey, float] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, report: Report, cycle: float = DEFAULT_REPORT_CYCLE) -> None:
        entry = self._pending.get(report.key)
        if entry is None:
            self._pending[report.key] = (report.copy(), cycle)
        else:
            entry[0].merge(report)

    def pending(self, key: DeviceKey) -> Report | None:
        """The report waiting for its cycle (not removed), for persisting it meanwhile."""
        entry = self._pending.get(key)
        return entry[0] if entry is not None else None

    def due(self, now: float) -> list[Report]:
        """The reports to send now (removed from the pending set)."""
        out = []
        for key, (report, cycle) in list(self._pending.items()):
            if now >= self._last_sent.get(key, -math.inf) + cycle:
                out.append(report)
                del self._pending[key]
                self._last_sent[key] = now
        return out

    def next_due(self) -> float | None:
        """When the next pending report is due (monotonic time), or None."""
        times = [self._last_sent.get(k, -math.inf) + c for k, (_, c) in self._pending.items()]
        return min(times) if times else None

    def forget(self, key: DeviceKey) -> None:
        self._pending.pop(key, None)
        self._last_sent.pop(key, None)
