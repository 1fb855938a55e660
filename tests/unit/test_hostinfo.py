"""hostinfo.sd_notify: what systemd's Type=notify units receive, on a real unix socket (a path
and an abstract name), and nothing sent when NOTIFY_SOCKET is unset."""

from __future__ import annotations

import socket

import pytest

from k3py.hostinfo import sd_notify

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("abstract", [False, True])
def test_sd_notify_reaches_the_socket(tmp_path, monkeypatch, abstract):
    name = f"@k3py-test-{id(tmp_path)}" if abstract else str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name[1:] if abstract else name)
        s.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        assert sd_notify("READY=1")
        assert s.recv(64) == b"READY=1"


def test_sd_notify_without_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sd_notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/socket")
    assert not sd_notify("READY=1")
