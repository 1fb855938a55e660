"""Facts about this host that both roles need (the server to advertise itself, the agent for
its Node addresses), the random ids a machine keeps in its data dir, and what both processes
tell the outside (systemd readiness, a stack dump on SIGUSR1); stdlib only."""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import socket
import sys

__all__ = ["primary_ip", "machine_secret", "sd_notify", "dump_stacks_on_sigusr1"]


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


def dump_stacks_on_sigusr1(loop: asyncio.AbstractEventLoop) -> None:
    """`kill -USR1 <pid>` writes every asyncio task's stack and every thread's to stderr (the
    log): what a process that seems stuck is waiting for. Costs nothing until the signal."""
    loop.add_signal_handler(signal.SIGUSR1, _dump_stacks)


def _dump_stacks() -> None:
    tasks = asyncio.all_tasks()
    print(f"--- SIGUSR1: {len(tasks)} asyncio tasks", file=sys.stderr)
    for task in sorted(tasks, key=lambda t: t.get_name()):
        print(f"task {task.get_name()}:", file=sys.stderr)
        for line in _awaiting(task.get_coro()):
            print(line, file=sys.stderr)
    print("--- threads", file=sys.stderr, flush=True)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)


def _awaiting(coro: object) -> list[str]:
    """Where a task's coroutine is suspended, outermost first, following what each coroutine
    or async generator awaits (Task.print_stack shows the outermost frame only)."""
    lines = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None) or \
            getattr(coro, "gi_frame", None)
        if frame is not None:
            lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} "
                         f"in {frame.f_code.co_name}")
        inner = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None) or \
            getattr(coro, "gi_yieldfrom", None)
        if inner is None or not (hasattr(inner, "cr_frame") or hasattr(inner, "ag_frame")
                                 or hasattr(inner, "gi_frame")):
            if inner is not None:
                lines.append(f"  awaiting {inner!r:.200}")
            break
        coro = inner
    return lines
