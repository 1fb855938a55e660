"""PyInstaller entry point of the one-file `k3py` binary: the same `k3py.cli.main` as the
console script and `python -m k3py`.

A one-file binary runs as two processes: the bootloader (the process systemd starts, the unit's
main PID) and this Python, its child. The bootloader forwards signals and exits with its child;
this process asks the kernel for a SIGTERM when the bootloader dies, so a kill -9 of the main PID
leaves no server holding the ports when systemd restarts the unit (KillMode=process kills
only the main PID)."""

import ctypes
import os
import signal
import sys

from k3py.cli import main

PR_SET_PDEATHSIG = 1


def _term_with_parent() -> None:
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # the bootloader died before the request
        os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    if getattr(sys, "frozen", False) and sys.platform == "linux":
        _term_with_parent()
    sys.exit(main())
