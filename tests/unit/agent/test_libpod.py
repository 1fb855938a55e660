"""Pure parts of the libpod API runtime: the multiplexed stream framing podman writes for
logs and execs, and where the agent's own service socket goes."""

from __future__ import annotations

import os
import struct

import pytest

from k3py.agent.runtime.libpod import demux, socket_path_for

pytestmark = pytest.mark.unit


def _frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


def test_demux_takes_whole_frames_and_keeps_the_rest():
    data = _frame(1, b"out\n") + _frame(2, b"err\n") + _frame(1, b"")
    buf = bytearray(data + _frame(1, b"partial")[:10])
    assert demux(buf) == [b"out\n", b"err\n", b""]
    assert len(buf) == 10  # an incomplete frame waits for the rest
    buf += _frame(1, b"partial")[10:]
    assert demux(buf) == [b"partial"] and buf == bytearray()


def test_demux_byte_by_byte():
    data = _frame(1, b"a" * 300) + _frame(2, b"b")
    buf, out = bytearray(), []
    for i in range(len(data)):
        buf += data[i:i + 1]
        out += demux(buf)
    assert out == [b"a" * 300, b"b"]


def test_socket_path_fits_a_unix_socket(tmp_path):
    short = socket_path_for(str(tmp_path / "agent"))
    assert short == str(tmp_path / "agent" / "podman.sock")
    deep = tmp_path / ("d" * 120) / "agent"
    long = socket_path_for(str(deep))
    assert len(long) <= 100 and long.endswith(".sock")
    assert long == socket_path_for(str(deep))  # stable: a restarted agent finds it again
    assert long != socket_path_for(str(deep) + "2")
    assert os.path.isabs(long)
