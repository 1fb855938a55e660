"""Wire form of tunnel messages: one JSON object per websocket text frame.

Used by cloudhub and edgehub; decode() turns anything malformed into a FramingError."""

from __future__ import annotations

import logging
from dataclasses import replace

import orjson

from k3py.tunnel.message import Message

__all__ = ["encode", "shared", "decode", "FramingError", "MAX_FRAME_BYTES",
           "MAX_DOWN_FRAME_BYTES", "SUBPROTOCOL"]

log = logging.getLogger("k3py.tunnel")

MAX_FRAME_BYTES = 16 * 1024 * 1024  # a node's frame, as the server takes it
# the server's frame, as a node takes it: a node trusts its server, and a sync carries every
# pod's peer view while a NetworkPolicy exists (~300 bytes a pod: 9 MB at 30,000 pods)
MAX_DOWN_FRAME_BYTES = 64 * 1024 * 1024
SUBPROTOCOL = "k3py.tunnel.v1"


class FramingError(ValueError):
    """A frame that is not a valid message; the peer is buggy or hostile, not the network."""


def encode(msg: Message) -> str:
    if msg.frame is not None:
        return msg.frame
    return orjson.dumps(msg.to_dict()).decode()


def shared(msg: Message) -> Message:
    """`msg` carrying its frame, for one message queued to many nodes (a Service, a Node's
    route view, a sync): it is encoded once, not once per node. Its one id is ACKed by each
    node apart, in each node's own outbox. One too big for a node is logged as an error: the
    node would drop its link on it, again at each resend."""
    frame = encode(msg)
    if len(frame) > MAX_DOWN_FRAME_BYTES:
        log.error("a %s message for the nodes is %d bytes, over their %d-byte limit: they "
                  "will drop the tunnel on it", msg.route.operation, len(frame), MAX_DOWN_FRAME_BYTES)
    return replace(msg, frame=frame)


def decode(frame: str | bytes, limit: int = MAX_FRAME_BYTES) -> Message:
    if len(frame) > limit:
        raise FramingError(f"frame of {len(frame)} bytes exceeds {limit}")
    try:
        data = orjson.loads(frame)
    except orjson.JSONDecodeError as e:
        raise FramingError(f"frame is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise FramingError("frame is not a JSON object")
    try:
        return Message.from_dict(data)
    except (ValueError, TypeError) as e:
        raise FramingError(str(e)) from None
