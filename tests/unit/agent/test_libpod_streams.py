"""The pure part of exec/attach over the libpod API: podman's multiplexed stream cut into
(fd, payload) as bytes arrive, and podman's own attach-socket noise kept out of stderr."""

from __future__ import annotations

import struct

import pytest

from k3py.agent.runtime.libpod import Frames

pytestmark = pytest.mark.unit


def _frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


def test_frames_keep_stdout_and_stderr_apart():
    data = _frame(1, b"out\n") + _frame(2, b"err\n") + _frame(1, b"") + _frame(1, b"more")
    assert Frames().feed(data) == [(1, b"out\n"), (2, b"err\n"), (1, b"more")]


def test_frames_byte_by_byte():
    data = _frame(1, b"a" * 70000) + _frame(2, b"b")
    frames, out = Frames(), []
    for i in range(len(data)):
        out += frames.feed(data[i:i + 1])
    assert out == [(1, b"a" * 70000), (2, b"b")]


def test_podman_attach_socket_reset_is_not_the_process_stderr():
    noise = (b"Error: read unixpacket @->/proc/self/fd/16/attach: read: connection reset by "
             b"peer\n")
    noise2 = b"Error: write unixpacket @->/proc/self/fd/15/attach: write: broken pipe\n"
    real = b"Error: runc: exec failed: executable file not found in $PATH\n"
    data = _frame(2, real) + _frame(2, noise) + _frame(2, noise2) + _frame(1, noise)
    # only podman's own line on stderr is dropped; the same text from the process stays
    assert Frames().feed(data) == [(2, real), (1, noise)]
