"""Node sessions: one NodeSession per node (send queue, duplicate window, open streams) that
outlives its websocket's reconnects, and TunnelHandler, which serves that websocket.

Owned by CloudHub (cloudhub.py); downstream.py queues into the sessions, upstream.py writes
what they receive, nodestreams.py relays stream frames through them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from k3py.api import errors
from k3py.server.apiserver.auth import Authenticator
from k3py.server.edge import nodestreams
from k3py.server.edge.nodepassword import NodePasswords
from k3py.server.edge.peertunnels import TunnelReport
from k3py.tunnel import framing
from k3py.tunnel.message import (
    CLOUD,
    GROUP_RESOURCE,
    GROUP_STREAM,
    GROUP_TUNNEL,
    OP_ACK,
    OP_KEEPALIVE,
    Message,
    ack_for,
    hello,
    keepalive,
)
from k3py.tunnel.protocol import (
    FEATURES,
    FEATURES_HEADER,
    HEARTBEAT,
    NODE_PASSWORD_HEADER,
    RESUME_HEADER,
    parse_features,
)
from k3py.tunnel.reliability import RESEND_AFTER, ReceivedWindow, SendQueue

__all__ = ["NodeSession", "TunnelHandler", "keepalive_loop", "resend_loop"]

log = logging.getLogger("k3py.cloudhub")


@dataclass
class NodeSession:
    """What the server knows about one node's link; outlives reconnects of the websocket.

    All writes to the websocket go through one writer task per connection, so messages
    leave in the order they were queued."""

    node: str
    queue: SendQueue = field(default_factory=SendQueue)
    window: ReceivedWindow = field(default_factory=ReceivedWindow)
    ws: web.WebSocketResponse | None = None
    streams: dict[str, asyncio.Queue] = field(default_factory=dict)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    connected_since: float | None = None  # wall-clock time the current websocket opened
    last_seen: float | None = None  # wall-clock time of the node's last frame (or link change)
    connects: int = 0  # websockets opened so far: reconnects are the ones after the first
    rtt: float | None = None  # seconds, the last keepalive's round trip on this link
    # the tunnel features the node's agent named on its last dial (protocol.FEATURES_HEADER;
    # none: an agent older than features)
    features: frozenset[str] = frozenset()
    # told the node's name when a figure the dashboard shows changed (link, rtt, queue)
    changed: Callable[[str], None] = lambda node: None

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    def speaks(self, feature: str) -> bool:
        """Whether the node's agent and this server both have `feature` (protocol.FEATURES)."""
        return feature in self.features and feature in FEATURES

    def figures(self) -> TunnelReport:
        """The tunnel as the dashboard shows it (times in epoch seconds)."""
        return TunnelReport(self.connected,
                            self.connected_since if self.connected else None,
                            self.last_seen, max(0, self.connects - 1),
                            round(self.rtt * 1000, 1) if self.rtt is not None else None,
                            len(self.queue.outbox))

    def send(self, msg: Message) -> None:
        """Reliable: kept in the outbox until ACKed, sent as soon as the node is connected."""
        self.queue.add(msg)
        self.wakeup.set()
        if not self.connected:
            self.changed(self.node)  # one more queued while offline

    def send_live(self, msg: Message) -> bool:
        """Best effort (ACKs, stream frames): dropped if the node is not connected."""
        if not self.connected:
            return False
        self.queue.add_live(msg)
        self.wakeup.set()
        return True

    def resend_due(self, now: float) -> None:
        if self.queue.requeue_due(now):
            self.wakeup.set()

    async def write_loop(self, ws: web.WebSocketResponse) -> None:
        async def write(msg: Message) -> None:
            await ws.send_str(framing.encode(msg))
        while not ws.closed:
            await self.wakeup.wait()
            self.wakeup.clear()
            await self.queue.flush(write)


def probe(session: NodeSession) -> None:
    """Time a round trip: the agent sends this content back (k3py.tunnel.message.keepalive)."""
    session.send_live(keepalive({"sent": time.monotonic()}, source=CLOUD))


async def keepalive_loop(sessions: dict[str, NodeSession]) -> None:
    """A round-trip probe on every live link each HEARTBEAT."""
    while True:
        await asyncio.sleep(HEARTBEAT)
        for session in list(sessions.values()):
            probe(session)


async def resend_loop(sessions: dict[str, NodeSession]) -> None:
    """One timer for every node: what stays unACKed on a live link goes again."""
    while True:
        await asyncio.sleep(RESEND_AFTER / 3)
        now = time.monotonic()
        for session in list(sessions.values()):
            session.resend_due(now)


class TunnelHandler:
    """GET TUNNEL_PATH: authenticates the node, resumes or starts its session with a full
    snapshot, then dispatches what the node sends: ACKs to the session's queue, stream frames
    to their relays, stream requests to `stream_request`, resource messages (once each) to `write_up`, ACKed when written."""

    def __init__(self, sessions: dict[str, NodeSession], authenticator: Authenticator,
                 passwords: NodePasswords, *, ready: Callable[[], Awaitable[None]],
                 snapshot: Callable[[str], Message],
                 write_up: Callable[[str, Message], Awaitable[None]],
                 stream_request: Callable[[NodeSession, Message], None],
                 changed: Callable[[str], None] = lambda node: None) -> None:
        self.sessions = sessions
        self.authenticator = authenticator
        self.passwords = passwords
        self._ready = ready          # the hub is started and its pod cache is synced
        self._snapshot = snapshot    # a node's full desired state (downstream.py)
        self._write_up = write_up    # one up message into the store (upstream.py)
        self._stream_request = stream_request  # a stream the node opens (noderelay.py)
        self._changed = changed  # a session's figures changed (the dashboard's tunnel column)

    def node_of_request(self, request: web.Request) -> str:
        user = self.authenticator.require(request)
        node = user.node_name
        if node is None:
            raise errors.forbidden(f'User "{user.name}" is not a node; the tunnel needs a node '
                                   f"client certificate")
        return node

    async def handle(self, request: web.Request) -> web.StreamResponse:
        node = self.node_of_request(request)
        password = request.headers.get(NODE_PASSWORD_HEADER, "")
        if password and not await self.passwords.owns(node, password):
            # a certificate from before the Node was deleted and its name went elsewhere
            log.warning("node %s: tunnel refused, the name belongs to another machine", node)
            raise errors.StatusError(409, "Conflict", f'node name "{node}" belongs to another '
                                     f"machine now (its node password differs)")
        await self._ready()
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, protocols=(framing.SUBPROTOCOL,),
                                   max_msg_size=framing.MAX_FRAME_BYTES)
        await ws.prepare(request)
        # first on the link, before anything the node could act on: what this server speaks
        await ws.send_str(framing.encode(hello(FEATURES, source=CLOUD)))
        session = self.sessions.get(node)
        resume = session is not None and request.headers.get(RESUME_HEADER) == "1"
        if session is None:
            session = self.sessions[node] = NodeSession(node, changed=self._changed)
        if session.connected:
            await session.ws.close(code=4000, message=b"replaced by a newer connection")
            # the old handler's cleanup sees a newer socket and leaves the session alone: the
            # streams on the replaced link end here, or they would wait for frames forever
            nodestreams.tunnel_lost(session)
        session.ws = ws
        session.features = parse_features(request.headers.get(FEATURES_HEADER))
        session.connected_since = session.last_seen = time.time()
        session.connects += 1
        session.queue.link_reset()  # resume: everything unACKed goes again, in order
        log.info("node %s connected (%s)", node, "resume" if resume else "full sync")
        if not resume:
            session.queue = SendQueue()
            session.send(framing.shared(self._snapshot(node)))  # encoded once, size checked
        writer = asyncio.create_task(session.write_loop(ws))
        probe(session)
        self._changed(node)
        try:
            async for frame in ws:
                session.last_seen = time.time()
                if frame.type != WSMsgType.TEXT:
                    continue
                try:
                    msg = framing.decode(frame.data)
                except framing.FramingError as e:
                    log.warning("node %s sent a bad frame: %s", node, e)
                    continue
                await self._received(session, msg)
        finally:
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
            if session.ws is ws:
                session.ws = None
                session.connected_since = None
                session.last_seen = time.time()
                nodestreams.tunnel_lost(session)
                self._changed(node)
            log.info("node %s disconnected", node)
        return ws

    async def _received(self, session: NodeSession, msg: Message) -> None:
        group = msg.route.group
        if group == GROUP_TUNNEL:
            if msg.route.operation == OP_ACK:
                session.queue.ack((msg.content or {}).get("ids") or [])
            elif msg.route.operation == OP_KEEPALIVE:
                sent = (msg.content or {}).get("sent") if isinstance(msg.content, dict) else None
                if isinstance(sent, int | float) and 0 <= time.monotonic() - sent < 3600:
                    session.rtt = time.monotonic() - sent
                    self._changed(session.node)
            return
        if group == GROUP_STREAM:
            if msg.header.parent_id:
                nodestreams.deliver(session, msg)
            else:
                self._stream_request(session, msg)
            return
        if group != GROUP_RESOURCE:
            return
        if session.window.seen(msg.id):
            session.send_live(ack_for([msg.id], source=CLOUD))
            return
        try:
            await self._write_up(session.node, msg)
        except errors.StatusError as e:
            if e.code >= 500:
                session.window.forget(msg.id)  # let the resend try again
                log.warning("node %s: %s %s: %s", session.node, msg.route.operation,
                            msg.route.resource, e.message)
                return
            log.info("node %s: dropped %s %s: %s", session.node, msg.route.operation,
                     msg.route.resource, e.message)
        except Exception:  # noqa: BLE001 - one bad message must not kill the link
            session.window.forget(msg.id)
            log.exception("node %s: writing %s failed", session.node, msg.route.resource)
            return
        session.send_live(ack_for([msg.id], source=CLOUD))
