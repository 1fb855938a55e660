"""Facts about this host that both roles need (the server to advertise itself, the agent for
its Node addresses) and the random ids a machine keeps in its data dir; stdlib only."""

from __future__ import annotations

import os
import socket

__all__ = ["primary_ip", "machine_secret"]


def primary_ip() -> str:
    """The address of the interface that would carry outbound traffic (127.0.0.1 if none)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent for a UDP connect
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def machine_secret(path: str, nbytes: int) -> str:
    """A random hex value kept in `path` (0600, parent dirs created): read if present and
    non-empty, else made once and written atomically, so it survives restarts."""
    try:
        with open(path) as f:
            value = f.read().strip()
        if value:
            return value
    except OSError:
        pass
    value = os.urandom(nbytes).hex()
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.replace(tmp, path)
    return value
