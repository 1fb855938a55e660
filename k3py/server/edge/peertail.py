"""A node's live MQTT tail (the dashboard's "mqtttail" feed, k3py.server.dashboard.mqtt),
whichever server holds the node's tunnel: `node_tail` opens the tail stream on a tunnel held
here (STREAM_MQTT_TAIL, k3py.tunnel.mqtt), `peer_tail` opens it on the peer that holds it.

On a shared datastore the server the tab is on asks its peers in turn (PeerRelay.websocket,
as the stream relay does) for a websocket to PEER_MQTT_TAIL_PATH?node=&filter=; the peer that
holds the node's tunnel opens the node's tail and sends each batch the node sends as one
text frame ({"messages": [...], "dropped": n}, the node's own rate limit and batch size; a
node's error as {"error": {code, reason, message}}), the others answer 503 before the upgrade
and never ask further. The payloads travel whole: the tab's server decides what its user may
see (PayloadAccess). Closing either end closes the other and the node's stream; the peer
endpoint serves PEER_USER only (403 for anyone else, an admin too), at most MAX_PEER_TAILS at
once. Installed by k3py.server.bootstrap on a shared datastore."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import aiohttp
import orjson
from aiohttp import WSMsgType, web

from k3py.aio import cancel_and_wait
from k3py.api import errors
from k3py.server.edge.cloudhub import CloudHub
from k3py.server.edge.peerrelay import PeerRelay
from k3py.server.edge.streamrelay import next_frame
from k3py.server.quota import Quota
from k3py.tunnel.mqtt import (
    DEFAULT_FILTER,
    MAX_BATCH,
    STREAM_MQTT_TAIL,
    TailEntry,
    TailRequest,
    valid_topic_filter,
)
from k3py.tunnel.protocol import FRAME_CLOSE, FRAME_DATA, FRAME_ERROR

__all__ = ["PEER_MQTT_TAIL_PATH", "MAX_PEER_TAILS", "Batch", "PeerTails", "tail_target",
           "read_batch", "batch_frame", "error_frame", "read_peer_frame", "node_tail",
           "peer_tail"]

PEER_MQTT_TAIL_PATH = "/v1-k3py/peer-mqtttail"
MAX_PEER_TAILS = 64  # tails a server serves its peers at once (a tab follows one node)
HEARTBEAT = 30.0  # seconds: a peer gone silently is noticed within two

Batch = tuple[list[TailEntry], int]  # the entries, and the node's count of messages dropped


def tail_target(node: object, topic_filter: object) -> tuple[str, str]:
    """The node and topic filter of a tail (DEFAULT_FILTER when none is given); 400 Status
    saying what is wrong."""
    topic_filter = topic_filter or DEFAULT_FILTER
    if not isinstance(node, str) or not node:
        raise errors.bad_request('a tail of MQTT messages needs a "node"')
    if not isinstance(topic_filter, str) or not valid_topic_filter(topic_filter):
        raise errors.bad_request(f"not an MQTT topic filter: {topic_filter!r} (# only as "
                                 f"the last level, + only as a whole level)")
    return node, topic_filter


def read_batch(content: object) -> Batch:
    """A batch as the node (or a peer) sent it: at most MAX_BATCH entries, one that is not an
    entry left out (it costs only itself), the dropped count 0 unless it is a count."""
    c = content if isinstance(content, dict) else {}
    messages, dropped = c.get("messages"), c.get("dropped")
    entries = []
    for raw in messages[:MAX_BATCH] if isinstance(messages, list) else ():
        with contextlib.suppress(ValueError):
            entries.append(TailEntry.from_content(raw))
    if isinstance(dropped, bool) or not isinstance(dropped, int) or dropped < 0:
        dropped = 0
    return entries, dropped


def batch_frame(batch: Batch) -> str:
    """A batch as the peer sends it to the tab's server."""
    entries, dropped = batch
    return orjson.dumps({"messages": [e.to_content() for e in entries],
                         "dropped": dropped}).decode()


def error_frame(e: errors.StatusError) -> str:
    """The node's error (its tail refused, its tunnel lost) as the peer sends it."""
    return orjson.dumps({"error": {"code": e.code, "reason": e.reason,
                                   "message": e.message}}).decode()


def read_peer_frame(data: str) -> Batch:
    """A frame from the peer: its batch; the node's error raised as its Status; ValueError
    when it is neither."""
    try:
        c = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(c, dict):
        raise ValueError("a frame is an object")
    error = c.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        raise errors.StatusError(
            code if isinstance(code, int) and 400 <= code < 600 else 503,
            str(error.get("reason") or "ServiceUnavailable"),
            str(error.get("message") or "the node's tail ended"))
    if not isinstance(c.get("messages"), list):
        raise ValueError('a frame holds "messages" or an "error"')
    return read_batch(c)


# ---------------------------------------------------------------- a tunnel held here

async def _node_batches(queue: asyncio.Queue) -> AsyncIterator[Batch]:
    while True:
        kind, content = await next_frame(queue)
        if kind == FRAME_ERROR:
            raise errors.StatusError(int(content.get("code") or 503),
                                     content.get("reason") or "ServiceUnavailable",
                                     content.get("message") or "the node's tail ended")
        if kind == FRAME_CLOSE:
            return
        if kind == FRAME_DATA:
            yield read_batch(content)


@contextlib.asynccontextmanager
async def node_tail(hub: CloudHub, node: str, topic_filter: str
                    ) -> AsyncIterator[AsyncIterator[Batch]]:
    """The batches of `node`'s tail through its tunnel here (a node's error raised as its
    Status); 503 on entering when the node's tunnel is not here. The stream is closed on
    leaving."""
    session, stream_id, queue = await hub.open_stream(
        node, STREAM_MQTT_TAIL, TailRequest(topic_filter).to_content())
    try:
        yield _node_batches(queue)
    finally:
        await hub.close_stream(session, stream_id)


# ---------------------------------------------------------------- a tunnel on a peer

async def _peer_batches(ws: aiohttp.ClientWebSocketResponse, node: str, peer: str
                        ) -> AsyncIterator[Batch]:
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            try:
                yield read_peer_frame(msg.data)
            except ValueError as e:
                raise errors.service_unavailable(
                    f"the MQTT tail of node {node} through server {peer}: {e}") from None
    if ws.close_code != aiohttp.WSCloseCode.OK:
        raise errors.service_unavailable(f"the MQTT tail of node {node} ended: server {peer}, "
                                         f"which holds its tunnel, went away")


@contextlib.asynccontextmanager
async def peer_tail(relay: PeerRelay, node: str, topic_filter: str
                    ) -> AsyncIterator[AsyncIterator[Batch]]:
    """The batches of `node`'s tail through the peer that holds its tunnel; 503 on entering
    when no peer does. The peer's websocket (and so the node's stream) is closed on leaving."""
    query = urlencode({"node": node, "filter": topic_filter})
    peer, ws = await relay.websocket(f"{PEER_MQTT_TAIL_PATH}?{query}", node, HEARTBEAT)
    try:
        yield _peer_batches(ws, node, peer)
    finally:
        await ws.close()


class PeerTails:
    """GET PEER_MQTT_TAIL_PATH: a peer's tail of a node connected here, on a websocket."""

    def __init__(self, hub: CloudHub, relay: PeerRelay) -> None:
        self.hub, self.relay = hub, relay
        self.serving = Quota(MAX_PEER_TAILS, f"this server serves at most {MAX_PEER_TAILS} "
                             "MQTT tails to the other servers at once")

    async def serve(self, request: web.Request) -> web.StreamResponse:
        self.relay.require_peer(request, "follow a node's MQTT tail for another server")
        node, topic_filter = tail_target(request.query.get("node"), request.query.get("filter"))
        if not self.hub.node_connected(node):  # said before "busy": the peer asks the next
            raise errors.service_unavailable(f"node {node} is not connected to this server")
        with self.serving.hold():
            # before the upgrade: a node not here is a plain 503, and the peer asks the next
            async with node_tail(self.hub, node, topic_filter) as batches:
                ws = web.WebSocketResponse(heartbeat=HEARTBEAT)
                await ws.prepare(request)
                await _forward(ws, batches)
                return ws


async def _forward(ws: web.WebSocketResponse, batches: AsyncIterator[Batch]) -> None:
    """The node's batches to the peer until the node's tail ends or the peer hangs up."""
    async def send() -> None:
        try:
            async for batch in batches:
                await ws.send_str(batch_frame(batch))
        except errors.StatusError as e:
            await ws.send_str(error_frame(e))

    async def hangup() -> None:
        async for _ in ws:  # the peer sends nothing: only its close, or the connection's end
            pass
    sending, listening = asyncio.ensure_future(send()), asyncio.ensure_future(hangup())
    try:
        await asyncio.wait({sending, listening}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sending, listening):
            await cancel_and_wait(task)
        with contextlib.suppress(Exception):
            await ws.close()
