"""Each node's tunnel as the dashboard's Nodes view shows it (connected since, last seen,
round-trip time, reconnects, messages queued for it, the server holding it), from CloudHub's
node sessions and, on a shared datastore, the tunnels the other servers hold (CloudHub's
peer_tunnels, merged as k3py.server.edge.peertunnels says), and a feed that yields the whole
table again whenever one of them changes.

CloudHub tells `tunnel_listeners` a node's name on each change (link up or down, a keepalive's
round trip, a message queued while offline), peer_tunnels its `listeners` each peer's; live.py serves the feed to a tab's "tunnels"
subscription, at most MAX_FLUSHES_PER_SECOND tables a second."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from k3py.server.edge.cloudhub import CloudHub

__all__ = ["TunnelFigures"]


class TunnelFigures:
    """The table of every node's tunnel figures, and its changes for the tabs that follow it."""

    def __init__(self, hub: CloudHub) -> None:
        self.sessions, self.peers = hub.sessions, hub.peer_tunnels
        self._followers: set[asyncio.Event] = set()
        hub.tunnel_listeners.add(self._changed)
        hub.peer_tunnels.listeners.add(self._changed)

    def table(self) -> dict[str, dict]:
        return self.peers.table({name: s.figures() for name, s in self.sessions.items()})

    def _changed(self, _node: str) -> None:
        for event in self._followers:
            event.set()

    async def follow(self, interval: float) -> AsyncIterator[dict[str, dict]]:
        """The table now, then again after each change, at most once per `interval`: a change
        after a quiet spell (a link going down) goes at once, the ones that follow it closer
        than `interval` wait for its end and go together."""
        event = asyncio.Event()
        self._followers.add(event)
        loop = asyncio.get_running_loop()
        try:
            while True:
                event.clear()
                sent = loop.time()
                yield self.table()
                await event.wait()
                await asyncio.sleep(sent + interval - loop.time())
        finally:
            self._followers.discard(event)
