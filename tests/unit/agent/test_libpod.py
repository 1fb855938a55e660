"""Pure parts of the libpod API runtime: the multiplexed stream framing podman writes for
logs and execs, and where the agent's own service socket goes."""

from __future__ import annotations

import os
import struct

import pytest

from k3py.agent.runtime.libpod import Frames, socket_path_for

pytestmark = pytest.mark.unit


def _frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


def test_a_log_keeps_whatever_the_container_wrote():
    """A log is the container's own output: a line that looks like podman's attach noise is
    kept there (only exec streams drop it), and empty frames are skipped."""
    noise = b"Error: read unixpacket @->/run/x/attach: read: connection reset by peer\n"
    data = _frame(1, b"out\n") + _frame(2, noise) + _frame(1, b"")
    assert Frames(attach_noise=False).feed(data) == [(1, b"out\n"), (2, noise)]
    assert Frames().feed(data) == [(1, b"out\n")]


def test_socket_path_fits_a_unix_socket(tmp_path):
    short = socket_path_for(str(tmp_path / "agent"))
    assert short == str(tmp_path / "agent" / "podman.sock")
    deep = tmp_path / ("d" * 120) / "agent"
    long = socket_path_for(str(deep))
    assert len(long) <= 100 and long.endswith(".sock")
    assert long == socket_path_for(str(deep))  # stable: a restarted agent finds it again
    assert long != socket_path_for(str(deep) + "2")
    assert os.path.isabs(long)
