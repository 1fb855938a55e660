"""`k3py check-config`: checks this host for what k3py needs (K3s's check-config in spirit):
Python, SQLite, podman and the two podman settings some hosts require, network namespaces,
ports. Prints one line per check with advice; exit 1 when a required check fails."""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys

__all__ = ["check_config_command", "run_checks"]

CONTAINERS_CONF = "/etc/containers/containers.conf"


def _hybrid_cgroups() -> bool:
    """cgroup v1 or hybrid (v1 controllers plus a v2 unified mount): crun fails here."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return False  # pure v2
    return os.path.isdir("/sys/fs/cgroup/unified") or os.path.isdir("/sys/fs/cgroup/memory")


def _conf_text() -> str:
    try:
        with open(CONTAINERS_CONF) as f:
            return f.read()
    except OSError:
        return ""


def run_checks() -> list[tuple[str, str, str]]:
    """(status pass|warn|fail, what, advice)."""
    out: list[tuple[str, str, str]] = []
    py = sys.version_info
    out.append(("pass" if py >= (3, 11) else "fail", f"python {py.major}.{py.minor}",
                "" if py >= (3, 11) else "install Python 3.11 or newer"))
    try:
        import apsw
        out.append(("pass", f"sqlite {apsw.sqlite_lib_version()} (apsw)", ""))
    except ImportError:
        out.append(("fail", "apsw (SQLite store)", "pip install apsw"))
    podman = shutil.which("podman")
    if podman is None:
        out.append(("warn", "podman", "apt-get install podman runc (needed to run pods on "
                    "this node; the API server works without it)"))
    else:
        try:
            ver = subprocess.run([podman, "--version"], capture_output=True, text=True,
                                 timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            ver = "podman (version unknown)"
        out.append(("pass", ver, ""))
        conf = _conf_text()
        if _hybrid_cgroups():
            ok = 'runtime = "runc"' in conf
            out.append(("pass" if ok else "fail", "container runtime on hybrid cgroups",
                        "" if ok else f'crun fails on cgroup v1/hybrid hosts: add runtime = '
                        f'"runc" under [engine] in {CONTAINERS_CONF} (and apt-get install runc)'))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 1048576:
            ok = "default_ulimits" in conf and "nofile=" in conf
            out.append(("pass" if ok else "fail", f"container ulimits (host nofile hard limit "
                        f"{hard})", "" if ok else 'this host forbids raising limits: add '
                        'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"] under '
                        f"[containers] in {CONTAINERS_CONF}"))
    ip = shutil.which("ip")
    out.append(("pass" if ip else "warn", "iproute2 (ip netns)",
                "" if ip else "apt-get install iproute2"))
    for port in (6443,):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
                out.append(("pass", f"port {port} free", ""))
            except OSError:
                out.append(("warn", f"port {port} in use",
                            "another server is running, or pass --https-listen-port"))
    return out


def check_config_command(argv: list[str]) -> int:
    failed = False
    for status, what, advice in run_checks():
        mark = {"pass": "ok  ", "warn": "warn", "fail": "FAIL"}[status]
        print(f"[{mark}] {what}" + (f": {advice}" if advice else ""))
        failed = failed or status == "fail"
    print("STATUS: " + ("fail" if failed else "pass"))
    return 1 if failed else 0
