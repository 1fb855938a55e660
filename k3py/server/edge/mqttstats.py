"""The newest MQTT summary of every connected node (k3py.tunnel.mqtt.MqttSummary), in memory
only: written by the node tunnel (upstream.py), forgotten when the node's link goes down, read
by the dashboard (k3py.server.dashboard.mqtt), which `listeners` tell of each change.

On a shared datastore the other servers' nodes are here too, recorded `via` the server that
holds their tunnel (peerreports.py): such a summary gives way to a newer one or to the node's
own, and goes when that server says the node's link went down, when it is no longer a live
peer, or when it has not been refreshed for a while (expire)."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from k3py.tunnel.mqtt import MqttSummary

__all__ = ["MqttFigures", "MAX_NODES"]

MAX_NODES = 5000  # summaries kept (one per connected node)


@dataclass(frozen=True, slots=True)
class _Figures:
    summary: MqttSummary
    via: str  # "" for a node connected here, else the address of the server it is on
    at: float  # this server's monotonic clock when recorded


class MqttFigures:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._nodes: dict[str, _Figures] = {}
        self.listeners: set[Callable[[str], None]] = set()

    def record(self, node: str, summary: MqttSummary, via: str = "") -> None:
        """The node's summary, sent by the node (`via` "") or shared by the server holding
        its tunnel, which counts only when newer than the one kept."""
        old = self._nodes.get(node)
        if old is None and len(self._nodes) >= MAX_NODES:
            return
        if via and old is not None and old.summary.timestamp >= summary.timestamp:
            return
        self._nodes[node] = _Figures(summary, via, self.clock())
        self._changed(node)

    def forget(self, node: str, via: str = "") -> bool:
        """The node's link went down here (`via` "") or on server `via`: its summary goes
        if it came that way. True when one went."""
        old = self._nodes.get(node)
        if old is None or old.via != via:
            return False
        del self._nodes[node]
        self._changed(node)
        return True

    def expire(self, peers: Collection[str], older_than: float) -> None:
        """Forget the summaries shared by a server not in `peers`, or recorded before
        `older_than` (this server's monotonic clock)."""
        for node, f in list(self._nodes.items()):
            if f.via and (f.via not in peers or f.at < older_than):
                del self._nodes[node]
                self._changed(node)

    def get(self, node: str) -> MqttSummary | None:
        found = self._nodes.get(node)
        return found.summary if found is not None else None

    def table(self) -> dict[str, dict]:
        return {name: f.summary.to_content() for name, f in self._nodes.items()}

    def _changed(self, node: str) -> None:
        for listener in list(self.listeners):
            listener(node)
