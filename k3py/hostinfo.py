"""Facts about this host that both roles need (the server to advertise itself, the agent for
its Node addresses); no state, stdlib only."""

from __future__ import annotations

import socket

__all__ = ["primary_ip"]


def primary_ip() -> str:
    """The address of the interface that would carry outbound traffic (127.0.0.1 if none)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent for a UDP connect
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"
