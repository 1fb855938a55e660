"""The remotecommand websocket framing (ChannelCodec) for every protocol k3py accepts: text and
binary frames both read, base64 frames decoded and written as text, the v5 flag, and what the
error channel carries for v4/v5 (Status JSON) and the older protocols (a failure's message)."""

from __future__ import annotations

import base64

import pytest

from k3py.api import errors
from k3py.server.edge.streams import EXEC_PROTOCOLS, ChannelCodec

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("protocol", ["v5.channel.k8s.io", "v4.channel.k8s.io",
                                      "channel.k8s.io", None])
def test_binary_protocols_read_text_and_binary_frames(protocol):
    codec = ChannelCodec(protocol)
    # the Python client's write_stdin: a text frame, the channel as a character
    assert codec.decode("\x00echo hi\n") == (0, b"echo hi\n")
    assert codec.decode(b"\x00echo hi\n") == (0, b"echo hi\n")
    assert codec.decode('\x04{"Width":80,"Height":24}') == (4, b'{"Width":80,"Height":24}')
    assert codec.decode("\x00h\u00e9") == (0, "h\u00e9".encode())
    assert codec.decode("") is None and codec.decode(b"") is None
    assert codec.encode(1, b"out") == b"\x01out"
    assert codec.v5 == (protocol == "v5.channel.k8s.io")


@pytest.mark.parametrize("protocol", ["base64.channel.k8s.io", "v4.base64.channel.k8s.io"])
def test_base64_protocols(protocol):
    codec = ChannelCodec(protocol)
    enc = base64.b64encode(b"echo hi\n").decode()
    assert codec.decode("0" + enc) == (0, b"echo hi\n")
    assert codec.decode(("0" + enc).encode()) == (0, b"echo hi\n")  # a binary frame too
    assert codec.decode("4" + base64.b64encode(b'{"Width":1}').decode()) == (4, b'{"Width":1}')
    assert codec.decode("0not base64!") is None
    assert codec.encode(2, b"\xff\x00err") == "2" + base64.b64encode(b"\xff\x00err").decode()
    assert not codec.v5


def test_error_channel_by_protocol():
    failure = errors.exit_code_status(["false"], 1)
    for protocol in ("v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io"):
        codec = ChannelCodec(protocol)
        assert codec.status(errors.stream_success()) == b'{"metadata":{},"status":"Success"}'
        assert b'"reason":"NonZeroExitCode"' in codec.status(failure)
    for protocol in ("channel.k8s.io", "base64.channel.k8s.io", None):
        codec = ChannelCodec(protocol)
        assert codec.status(errors.stream_success()) is None
        assert codec.status(failure) == failure["message"].encode()


def test_protocols_offered_in_upstream_preference():
    assert EXEC_PROTOCOLS[:2] == ("v5.channel.k8s.io", "v4.channel.k8s.io")
    assert set(EXEC_PROTOCOLS[2:]) == {"v4.base64.channel.k8s.io", "channel.k8s.io",
                                        "base64.channel.k8s.io"}
