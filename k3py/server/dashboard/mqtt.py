"""The dashboard's MQTT figures, served as two feeds on the tab's websocket (live.py):

- "mqtt": every connected node's newest MQTT summary (clients, messages per second by topic,
  totals; k3py.tunnel.mqtt), again on each change, at most MAX_FLUSHES_PER_SECOND a second;
  authorized as `list nodes`, as the tunnel column is.
- "mqtttail" {node, filter}: the node's live tail, only while the tab follows it: the server
  opens a tail stream to the node through its tunnel (the node filters and holds it to at most
  MAX_TAIL_RATE messages a second, counting the rest as dropped) and closes it when the tab
  cancels or goes away; on a shared datastore, through the server that holds the node's
  tunnel when it is not here (k3py.server.edge.peertail): at most MAX_PEER_TAILS_PER_USER
  such tails per user at once (429 beyond), so that no one user takes all of a peer's
  MAX_PEER_TAILS. Authorized as `get` of the node.
  A message's payload is shown only to a user who may `get` the Device its topic names
  (devices.kubeedge.io, in its namespace; a node topic's answer lists the node's devices:
  `list devices` in every namespace), asked of this server's authorizer, wherever the node
  is; otherwise the tab gets its topic, time and size only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from k3py.api import errors
from k3py.mapper import topics as t
from k3py.server.apiserver.auth import AuthorizerChain, User
from k3py.server.edge.cloudhub import CloudHub
from k3py.server.edge.peerrelay import PeerRelay
from k3py.server.edge.peertail import node_tail, peer_tail, tail_target
from k3py.server.quota import Quota
from k3py.tunnel.mqtt import TailEntry

__all__ = ["MqttFeeds", "PayloadAccess", "device_of", "MAX_PEER_TAILS_PER_USER"]

DEVICE_GROUP = "devices.kubeedge.io"
ACCESS_TTL = 10.0  # seconds a payload decision is kept for a tail
MAX_DECISIONS = 256  # kept per tail
# a user's tails through the other servers at once, whatever tabs they are in: a peer serves
# MAX_PEER_TAILS to all the servers' users together
MAX_PEER_TAILS_PER_USER = 8


def device_of(topic: str, hint: tuple[str, str] | None) -> tuple[str, str] | None | str:
    """The Device (namespace, name) a topic names; "node" for a node topic; None for neither.
    The legacy name-only form takes the namespace the node resolved it to (`hint`) when the
    names agree, else "default" (as the node's twin does)."""
    parsed = t.parse_topic(topic)
    if isinstance(parsed, t.NodeTopic):
        return "node"
    if parsed is None:
        return None
    if parsed.namespace:
        return parsed.namespace, parsed.name
    if hint is not None and hint[1] == parsed.name:
        return hint
    return "default", parsed.name


class PayloadAccess:
    """Whether a user may see a topic's payload, asked of the authorizer and kept for
    ACCESS_TTL seconds (at most MAX_DECISIONS decisions)."""

    def __init__(self, authorizer: AuthorizerChain, user: User,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.authorizer, self.user, self.clock = authorizer, user, clock
        self._decided: dict[object, tuple[bool, float]] = {}

    def allowed(self, topic: str, hint: tuple[str, str] | None) -> bool:
        what = device_of(topic, hint)
        if what is None:
            return False
        now = self.clock()
        decided = self._decided.get(what)
        if decided is not None and decided[1] > now:
            return decided[0]
        try:
            if what == "node":
                self.authorizer.authorize(self.user, "list", DEVICE_GROUP, "devices", None)
            else:
                namespace, name = what  # type: ignore[misc]
                self.authorizer.authorize(self.user, "get", DEVICE_GROUP, "devices", namespace,
                                          name)
            ok = True
        except errors.StatusError:
            ok = False
        if len(self._decided) >= MAX_DECISIONS:
            self._decided.clear()
        self._decided[what] = (ok, now + ACCESS_TTL)
        return ok


class MqttFeeds:
    """The "mqtt" and "mqtttail" feeds of the tab's websocket (LiveSocket's `feeds`)."""

    def __init__(self, authorizer: AuthorizerChain, hub: CloudHub, interval: float,
                 peers: PeerRelay | None = None) -> None:
        self.authorizer = authorizer
        self.hub = hub
        self.interval = interval
        self.peers = peers  # the other servers on a shared datastore
        self.peer_tails = Quota(  # user name -> tails through the other servers
            MAX_PEER_TAILS_PER_USER,
            f"at most {MAX_PEER_TAILS_PER_USER} MQTT tails per user through the other servers "
            "at once: stop following another node's tail (in any tab) first")

    def feeds(self) -> dict:
        return {"mqtt": self.summaries, "mqtttail": self.tail}

    async def summaries(self, user: User, _msg: dict) -> AsyncIterator[dict]:
        """{"nodes": {NAME: summary}} now, then again after each change."""
        self.authorizer.authorize(user, "list", "", "nodes", None)
        figures = self.hub.mqtt
        changed = asyncio.Event()

        def listener(_node: str) -> None:
            changed.set()
        figures.listeners.add(listener)
        try:
            while True:
                changed.clear()
                yield {"nodes": figures.table()}
                await changed.wait()
                await asyncio.sleep(self.interval)
        finally:
            figures.listeners.discard(listener)

    async def tail(self, user: User, msg: dict) -> AsyncIterator[dict]:
        """{"messages": [entry...], "dropped": n} per batch the node sends; an entry's
        payload is "" and `hidden` true where the user may not read its device."""
        node, topic_filter = tail_target(msg.get("node"), msg.get("filter"))
        self.authorizer.authorize(user, "get", "", "nodes", None, node)
        access = PayloadAccess(self.authorizer, user)
        tail = node_tail(self.hub, node, topic_filter) \
            if self.peers is None or self.hub.node_connected(node) \
            else self.peer_tails.around(user.name, peer_tail(self.peers, node, topic_filter))
        async with tail as batches:
            async for entries, dropped in batches:
                yield {"messages": _shown(entries, access), "dropped": dropped}


def _shown(entries: list[TailEntry], access: PayloadAccess) -> list[dict]:
    out = []
    for entry in entries:
        row = entry.to_content()
        row.pop("device", None)
        if not access.allowed(entry.topic, entry.device):
            row["payload"], row["hidden"] = "", True
        out.append(row)
    return out
