"""Facts about this host that both roles need (the server to advertise itself, the agent for
its Node addresses) and the random ids a machine keeps in its data dir; stdlib only."""

from __future__ import annotations

import os
import socket

__all__ = ["primary_ip", "machine_secret", "sd_notify"]


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


def sd_notify(state: str) -> bool:
    """Tell systemd our state ("READY=1", "STOPPING=1") when it started us with Type=notify
    (NOTIFY_SOCKET set, a path or an abstract "@name"); False when there is no one to tell."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if not addr or addr[0] not in "/@":
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
        return True
    except OSError:
        return False
