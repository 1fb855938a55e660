"""Each node's tunnel figures as one record (TunnelReport: what the dashboard's tunnel column
shows, and what a server shares of its own nodes' tunnels with the other servers under
TUNNEL_KIND, peerreports.py), and PeerTunnels: the figures the other servers shared, merged
with this server's own sessions into one table.

A node's agent holds its tunnel to one server; on a shared datastore the others learn its
figures from that server whenever they change (the link going up or down, each keepalive's
round trip: every HEARTBEAT while connected). Per node the table shows one entry, a connected
one before a disconnected one, else the newer lastSeen, with the server that holds it ("" for
this one). A peer's entry goes when that server is no longer a live peer or has not refreshed
it for TUNNEL_STALE seconds (expire, called by peerreports.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from k3py.api.amounts import is_amount

__all__ = ["TUNNEL_KIND", "TUNNEL_STALE", "MAX_NODES", "TunnelReport", "PeerTunnels"]

TUNNEL_KIND = "tunnel"
# a shared connected tunnel is refreshed by each keepalive (10 s); a disconnected one is not,
# and its figures (last seen, messages queued) go stale on the server that had it
TUNNEL_STALE = 60.0
MAX_NODES = 5000  # nodes whose peers' figures are kept


def _figure(c: dict, key: str) -> float | None:
    v = c.get(key)
    if v is None:
        return None
    if not is_amount(v):
        raise ValueError(f'"{key}" is a number >= 0 and < 2**63, or null')
    return float(v)


def _count(c: dict, key: str) -> int:
    v = c.get(key)
    if not isinstance(v, int) or not is_amount(v):
        raise ValueError(f'"{key}" is a count: a whole number >= 0 and < 2**63')
    return v


@dataclass(frozen=True, slots=True)
class TunnelReport:
    """One node's tunnel (times in epoch seconds, the server's clock)."""

    connected: bool
    connected_since: float | None
    last_seen: float | None
    reconnects: int
    rtt_ms: float | None
    queued: int

    def to_content(self) -> dict:
        return {"connected": self.connected, "connectedSince": self.connected_since,
                "lastSeen": self.last_seen, "reconnects": self.reconnects,
                "rttMs": self.rtt_ms, "queued": self.queued}

    @classmethod
    def from_content(cls, c: Any) -> TunnelReport:
        """ValueError saying what is wrong."""
        if not isinstance(c, dict):
            raise ValueError("tunnel figures are an object")
        if not isinstance(c.get("connected"), bool):
            raise ValueError('tunnel figures say whether "connected"')
        return cls(c["connected"], _figure(c, "connectedSince"), _figure(c, "lastSeen"),
                   _count(c, "reconnects"), _figure(c, "rttMs"), _count(c, "queued"))

    def wins_over(self, other: TunnelReport) -> bool:
        """Connected before disconnected, else the newer last seen."""
        return ((self.connected, self.last_seen or 0.0) >
                (other.connected, other.last_seen or 0.0))


@dataclass(frozen=True, slots=True)
class _Shared:
    report: TunnelReport
    at: float  # this server's monotonic clock when recorded


class PeerTunnels:
    """The tunnel figures the other servers shared, by node and server; `listeners` are told
    a node's name on each change."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._nodes: dict[str, dict[str, _Shared]] = {}
        self.listeners: set[Callable[[str], None]] = set()

    def record(self, node: str, server: str, report: TunnelReport) -> None:
        """The node's tunnel as `server` (a peer's address) sees it."""
        kept = self._nodes.get(node)
        if kept is None:
            if len(self._nodes) >= MAX_NODES:
                return
            kept = self._nodes[node] = {}
        kept[server] = _Shared(report, self.clock())
        self._changed(node)

    def expire(self, peers: Collection[str], older_than: float) -> None:
        """Forget what a server not in `peers` shared, or what was recorded before
        `older_than` (this server's monotonic clock)."""
        for node, kept in list(self._nodes.items()):
            gone = [s for s, f in kept.items() if s not in peers or f.at < older_than]
            for server in gone:
                del kept[server]
            if not kept:
                del self._nodes[node]
            if gone:
                self._changed(node)

    def table(self, own: dict[str, TunnelReport]) -> dict[str, dict]:
        """Every node's figures, this server's `own` and the peers', one per node (the one
        that wins_over the others; this server's on a tie) with the server that holds it."""
        best = {node: ("", r) for node, r in own.items()}
        for node, kept in self._nodes.items():
            for server, f in kept.items():
                held = best.get(node)
                if held is None or f.report.wins_over(held[1]):
                    best[node] = (server, f.report)
        return {node: {**r.to_content(), "server": server} for node, (server, r) in best.items()}

    def _changed(self, node: str) -> None:
        for listener in list(self.listeners):
            listener(node)
