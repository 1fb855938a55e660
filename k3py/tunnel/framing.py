"""Wire form of tunnel messages: one JSON object per websocket text frame.

Used by cloudhub and edgehub; decode() turns anything malformed into a FramingError."""

from __future__ import annotations

from dataclasses import replace

import orjson

from k3py.tunnel.message import Message

__all__ = ["encode", "shared", "decode", "FramingError", "MAX_FRAME_BYTES", "SUBPROTOCOL"]

MAX_FRAME_BYTES = 16 * 1024 * 1024
SUBPROTOCOL = "k3py.tunnel.v1"


class FramingError(ValueError):
    """A frame that is not a valid message; the peer is buggy or hostile, not the network."""


def encode(msg: Message) -> str:
    if msg.frame is not None:
        return msg.frame
    return orjson.dumps(msg.to_dict()).decode()


def shared(msg: Message) -> Message:
    """`msg` carrying its frame, for one message queued to many nodes (a Service, a Node's
    route view): it is encoded once, not once per node. Its one id is ACKed by each node
    apart, in each node's own outbox."""
    return replace(msg, frame=encode(msg))


def decode(frame: str | bytes) -> Message:
    if len(frame) > MAX_FRAME_BYTES:
        raise FramingError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}")
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
