"""The Kubernetes remotecommand websocket channel protocols (v5, v4, base64 and the older ones)
and their framing, with no I/O: `ChannelCodec`.

Used by the websocket exec/attach client (execclients.py); EXEC_PROTOCOLS is what it offers
when it accepts the upgrade. docs/design/streams.md has the table of protocols."""

from __future__ import annotations

import base64
import binascii

import orjson

__all__ = ["EXEC_PROTOCOLS", "ChannelCodec", "CH_STDIN", "CH_STDOUT", "CH_STDERR", "CH_ERROR",
           "CH_RESIZE", "CH_CLOSE"]

# the Kubernetes remotecommand websocket protocols, as kube-apiserver (v5) and the kubelet
# (the rest) accept them; kubectl >= 1.30 offers v5 first. The base64 ones send text frames:
# the channel as an ASCII digit, then the payload in base64. "" is a client that named none.
V5_PROTOCOL, V4_PROTOCOL = "v5.channel.k8s.io", "v4.channel.k8s.io"
V4_BASE64_PROTOCOL = "v4.base64.channel.k8s.io"
PRE_V4_PROTOCOL, PRE_V4_BASE64_PROTOCOL = "channel.k8s.io", "base64.channel.k8s.io"
EXEC_PROTOCOLS = (V5_PROTOCOL, V4_PROTOCOL, V4_BASE64_PROTOCOL, PRE_V4_PROTOCOL,
                  PRE_V4_BASE64_PROTOCOL)
BASE64_PROTOCOLS = (V4_BASE64_PROTOCOL, PRE_V4_BASE64_PROTOCOL)
STATUS_JSON_PROTOCOLS = (V5_PROTOCOL, V4_PROTOCOL, V4_BASE64_PROTOCOL)
CH_STDIN, CH_STDOUT, CH_STDERR, CH_ERROR, CH_RESIZE, CH_CLOSE = 0, 1, 2, 3, 4, 255


class ChannelCodec:
    """The framing of one remotecommand websocket protocol, with no I/O: a channel number in
    front of every message (a byte, or an ASCII digit then base64 for the base64 protocols).
    Input is read from text and binary frames alike, as upstream's wsstream reads it (the
    Python client writes stdin in text frames)."""

    def __init__(self, protocol: str | None) -> None:
        self.protocol = protocol or ""
        self.base64 = self.protocol in BASE64_PROTOCOLS
        self.v5 = self.protocol == V5_PROTOCOL
        # v4 and v5 put the Status on the error channel as JSON; the older protocols write
        # only a failure's message, and nothing on success (the kubelet's v1WriteStatusFunc)
        self.status_json = self.protocol in STATUS_JSON_PROTOCOLS

    def decode(self, payload: bytes | str) -> tuple[int, bytes] | None:
        """(channel, data) of one incoming message, or None when it carries nothing."""
        raw = payload.encode() if isinstance(payload, str) else payload
        if not raw:
            return None
        ch, data = raw[0], raw[1:]
        if self.base64:
            ch -= ord("0")
            try:
                data = base64.b64decode(data, validate=True)
            except binascii.Error:
                return None
        return ch, data

    def encode(self, ch: int, data: bytes) -> bytes | str:
        """One outgoing message: text for the base64 protocols, binary otherwise."""
        if self.base64:
            return chr(ord("0") + ch) + base64.b64encode(data).decode()
        return bytes([ch]) + data

    def status(self, status: dict) -> bytes | None:
        """What the error channel carries for a final Status (None: nothing)."""
        if self.status_json:
            return orjson.dumps(status)
        if status.get("status") == "Success":
            return None
        return str(status.get("message") or "").encode()
