"""The newest usage report of every node, in memory only (as metrics-server keeps its last
scrape): written by the node tunnel, read by the metrics API and the HPA controller. A report
older than a few of its windows (a node gone quiet) counts as no metrics. `listeners` are told
each report as it is recorded (the dashboard's metrics history). On a shared datastore the
reports of the other servers' nodes are recorded here too (k3py.server.edge.peerreports), so
every server, and the HPA controller on the leader, sees every node. At most MAX_NODES nodes'
reports are kept: a new node's makes room by dropping the stale ones (nodes gone quiet or
deleted), else the oldest."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from k3py.tunnel.protocol import PodUsage, UsageReport

__all__ = ["UsageStore", "PodSample", "STALE_AFTER", "MAX_NODES"]

STALE_AFTER = 60.0  # seconds, at least: 3 windows of the report when longer
MAX_NODES = 5000  # nodes whose reports are kept (the edge's mqttstats and peertunnels: as many)


@dataclass(frozen=True, slots=True)
class PodSample:
    """One pod's usage with the time and window of the report it came in."""
    timestamp: float
    window: float
    usage: PodUsage


class UsageStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._nodes: dict[str, UsageReport] = {}
        self._pods: dict[str, tuple[str, PodUsage]] = {}  # pod uid -> (node, usage)
        self.listeners: set[Callable[[str, UsageReport], None]] = set()

    def record(self, node: str, report: UsageReport, newer_only: bool = False) -> None:
        """Keep `report` as the node's newest; with `newer_only` (a report another server
        shares) only when it is newer than the one kept. A report from the future (the node's
        clock ahead) counts as taken now: kept at its own time, it would stay fresh, and win
        over every correct report, until that time came."""
        now = self.clock()
        if report.timestamp > now:
            report = dataclasses.replace(report, timestamp=now)
        old = self._nodes.get(node)
        if newer_only and old is not None and old.timestamp >= report.timestamp:
            return
        if old is not None:
            self._forget_pods(node, old)
        elif len(self._nodes) >= MAX_NODES:
            self._make_room()
        self._nodes[node] = report
        for p in report.pods:
            self._pods[p.uid] = (node, p)
        for tell in self.listeners:
            tell(node, report)

    def _make_room(self) -> None:
        """Drop the stale reports, or else the oldest one: node names no longer reporting
        (or a peer's flood of them) cannot grow the store, and a real node that lost its
        place takes it back with its next report."""
        stale = [n for n, r in self._nodes.items() if not self._fresh(r)]
        for node in stale or [min(self._nodes, key=lambda n: self._nodes[n].timestamp)]:
            self._forget_pods(node, self._nodes.pop(node))

    def _forget_pods(self, node: str, report: UsageReport) -> None:
        for p in report.pods:
            if self._pods.get(p.uid, ("",))[0] == node:
                del self._pods[p.uid]

    def _fresh(self, report: UsageReport) -> bool:
        return self.clock() - report.timestamp <= max(STALE_AFTER, 3 * report.window)

    def node(self, name: str) -> UsageReport | None:
        report = self._nodes.get(name)
        return report if report is not None and self._fresh(report) else None

    def pod(self, uid: str) -> PodSample | None:
        found = self._pods.get(uid)
        if found is None:
            return None
        report = self.node(found[0])
        if report is None:
            return None
        return PodSample(report.timestamp, report.window, found[1])
