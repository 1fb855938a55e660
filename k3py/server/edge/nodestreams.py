"""Streams on a node's tunnel, server side: open one (a request the agent answers with
frames), deliver the frames the node sends to the relay waiting on it, close it.

The relays that serve kubectl are streams.py's and portforward.py's; the sessions are sessions.py's."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from k3py.api import errors
from k3py.tunnel.message import CLOUD, GROUP_STREAM, Message, new_message
from k3py.tunnel.protocol import FRAME_CLOSE, FRAME_ERROR

if TYPE_CHECKING:
    from k3py.server.edge.sessions import NodeSession

__all__ = ["open_stream", "close_stream", "deliver", "tunnel_lost"]


def _not_connected(node: str) -> errors.StatusError:
    return errors.service_unavailable(f"node {node} is not connected to the server")


def open_stream(session: NodeSession | None, node: str, operation: str, params: dict
                ) -> tuple[str, asyncio.Queue]:
    """Send the request; (stream id, the queue of the node's (frame, content) answers).
    503 when `session` (NodeSession or None) is not connected."""
    if session is None or not session.connected:
        raise _not_connected(node)
    stream_id = uuid.uuid4().hex
    queue: asyncio.Queue = asyncio.Queue()
    session.streams[stream_id] = queue
    msg = new_message(source=CLOUD, group=GROUP_STREAM, operation=operation,
                      content=params, msg_id=stream_id)
    if not session.send_live(msg):
        session.streams.pop(stream_id, None)
        raise _not_connected(node)
    return stream_id, queue


def close_stream(session: NodeSession, stream_id: str) -> None:
    """Stop waiting for the stream and tell the node to stop serving it (once)."""
    if session.streams.pop(stream_id, None) is not None:
        session.send_live(new_message(source=CLOUD, group=GROUP_STREAM,
                                      operation=FRAME_CLOSE, parent_id=stream_id))


def deliver(session: NodeSession, msg: Message) -> None:
    """A frame from the node to the relay of its stream (dropped if nobody waits any more)."""
    q = session.streams.get(msg.header.parent_id)
    if q is not None:
        q.put_nowait((msg.route.operation, msg.content))


def tunnel_lost(session: NodeSession) -> None:
    """The node's websocket closed: every open stream ends with an error."""
    for q in session.streams.values():
        q.put_nowait((FRAME_ERROR, "the node's tunnel disconnected"))
