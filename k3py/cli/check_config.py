"""`k3py check-config`: checks this host for what k3py needs (Python, SQLite, the kernel, its
modules and cgroups, podman, runc, conmon and containers.conf, ports, data-dir space, the
clock); one line per check with its fix; exit 1 when a required check fails."""

from __future__ import annotations

import asyncio
import datetime as dt
import glob
import gzip
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from typing import Any

from k3py import PROGRAM
from k3py.cli.flags import CHECK_CONFIG, HelpRequested, UsageError, parse
from k3py.config import DEFAULT_DATA_DIR

__all__ = ["check_config_command", "run_checks", "Check", "cgroup_layout",
           "nofile_raise_forbidden", "read_containers_conf", "memory_controller",
           "kernel_checks", "disk_check", "clock_check"]

CONTAINERS_CONF = "/etc/containers/containers.conf"
# podman gives containers nofile=1048576 unless containers.conf says otherwise
PODMAN_DEFAULT_NOFILE = 1048576
MIN_SQLITE = (3, 35, 0)  # RETURNING, used by the store
MIN_PODMAN = (4, 0, 0)
MIN_KERNEL = (4, 19)  # cgroup v2 memory accounting, overlayfs on every Pi OS kernel
MIN_FREE_FAIL = 500 * 10**6  # bytes free under the data dir below which the store stops
MIN_FREE_WARN = 2 * 10**9  # images and pod logs need more than the store
# The raspberrypi kernel turns the memory controller off unless the command line asks
PI_CMDLINE_FIX = ("append ' cgroup_memory=1 cgroup_enable=memory' to the one line of "
                  "/boot/firmware/cmdline.txt (/boot/cmdline.txt before Bookworm) and reboot")
# The earliest time a sane clock can show: before this k3py did not exist
CLOCK_FLOOR = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
PORTS = ((6443, "API server"), (80, "ingress http"), (443, "ingress https"),
         (1883, "MQTT broker"))


@dataclass(frozen=True)
class Check:
    section: str
    name: str
    status: str  # pass | warn | fail
    detail: str = ""
    advice: str = ""  # one line: what to do (warn and fail only)


def _version_tuple(text: str) -> tuple[int, ...]:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(x or 0) for x in m.groups()) if m else ()


def cgroup_layout(root: str = "/sys/fs/cgroup") -> str:
    """'v2' (unified), 'hybrid' (v1 controllers plus a v2 mount at unified/), 'v1' or
    'none'. crun fails to start containers on v1 and hybrid hosts; runc works."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return "v2"
    if os.path.isdir(os.path.join(root, "unified")):
        return "hybrid"
    if any(os.path.isdir(os.path.join(root, c)) for c in ("memory", "cpu", "pids")):
        return "v1"
    return "none"


def nofile_raise_forbidden() -> tuple[bool, int]:
    """(True if this process may not raise its nofile hard limit to podman's default, the
    hard limit). Unprivileged users and containers without CAP_SYS_RESOURCE hit this, and
    then every container start fails unless containers.conf sets default_ulimits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard >= PODMAN_DEFAULT_NOFILE:
        return False, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, PODMAN_DEFAULT_NOFILE))
    except (ValueError, OSError):
        return True, hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))  # lowering is always allowed
    return False, hard


def read_containers_conf(paths: list[str] | None = None) -> tuple[dict[str, Any], str]:
    """The merged containers.conf tables (later files win, as podman reads them) and an
    error message for a file that is not valid TOML ("" when all parse)."""
    if paths is None:
        if os.environ.get("CONTAINERS_CONF"):
            paths = [os.environ["CONTAINERS_CONF"]]
        else:
            paths = ["/usr/share/containers/containers.conf", CONTAINERS_CONF,
                     *sorted(glob.glob("/etc/containers/containers.conf.d/*.conf"))]
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError:
            continue
        except tomllib.TOMLDecodeError as e:
            return merged, f"{path} is not valid TOML ({e})"
        for table, values in data.items():
            if isinstance(values, dict):
                merged.setdefault(table, {}).update(values)
    return merged, ""


def _ulimit_values(entries: Any, name: str) -> tuple[int, int] | None:
    for entry in entries if isinstance(entries, list) else []:
        key, _, limits = str(entry).partition("=")
        if key.strip() == name:
            soft, _, hard = limits.partition(":")
            try:
                return int(soft), int(hard or soft)
            except ValueError:
                return None
    return None


def _system_checks() -> list[Check]:
    out = []
    py = sys.version_info
    ok = py >= (3, 11)
    out.append(Check("System", "python", "pass" if ok else "fail",
                     f"{py.major}.{py.minor}.{py.micro}",
                     "" if ok else "install Python 3.11 or newer"))
    try:
        import apsw
        version = apsw.sqlite_lib_version()
        ok = _version_tuple(version) >= MIN_SQLITE
        out.append(Check("System", "sqlite", "pass" if ok else "fail",
                         f"{version} (apsw {apsw.apsw_version()})",
                         "" if ok else "pip install -U apsw (it bundles a recent SQLite)"))
    except ImportError:
        out.append(Check("System", "sqlite", "fail", "apsw missing",
                         "pip install apsw (the server's store uses it)"))
    ip = shutil.which("ip")
    netns_ok = os.path.exists("/proc/self/ns/net") and ip is not None and _runs([ip, "netns",
                                                                                  "list"])
    out.append(Check("System", "network namespaces", "pass" if netns_ok else "warn",
                     "ip netns works" if netns_ok else "ip netns unavailable",
                     "" if netns_ok else "apt-get install iproute2, and use a kernel with "
                     "CONFIG_NET_NS (needed for pod networking)"))
    return out


def _kernel_config() -> str:
    """The running kernel's build config (/proc/config.gz, else /boot/config-RELEASE)."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            return f.read()
    except OSError:
        return _read(f"/boot/config-{os.uname().release}")


def _module_state(name: str, config_key: str, present: bool, config: str) -> str:
    """"loaded" (or built in), "loadable" (a module not loaded yet) or "missing"."""
    if present or os.path.isdir(f"/sys/module/{name}") or f"{config_key}=y" in config:
        return "loaded"
    if f"{config_key}=m" in config or glob.glob(
            f"/lib/modules/{os.uname().release}/**/{name}.ko*", recursive=True):
        return "loadable"
    return "missing"


# module -> (kernel config key, what needs it, required, probe that it works without a module)
_MODULES = {
    "overlay": ("CONFIG_OVERLAY_FS", "podman's overlay storage (else the slow vfs driver)",
                False, lambda: "overlay" in _read("/proc/filesystems")),
    "br_netfilter": ("CONFIG_BRIDGE_NETFILTER", "Service traffic between pods on the bridge",
                     False, lambda: os.path.isdir("/proc/sys/net/bridge")),
    "nf_tables": ("CONFIG_NF_TABLES", "the Service proxy's nftables rules", True,
                  lambda: _runs(["nft", "list", "tables"]) if shutil.which("nft") else False),
}


def kernel_checks(release: str | None = None, config: str | None = None) -> list[Check]:
    sec = "Kernel"
    release = release or os.uname().release
    config = _kernel_config() if config is None else config
    ok = _version_tuple(release)[:2] >= MIN_KERNEL
    out = [Check(sec, "kernel version", "pass" if ok else "warn", release,
                 "" if ok else f"upgrade to Linux {MIN_KERNEL[0]}.{MIN_KERNEL[1]} or newer")]
    for name, (key, why, required, probe) in _MODULES.items():
        state = _module_state(name, key, probe(), config)
        if state == "loaded":
            out.append(Check(sec, f"module {name}", "pass", "available"))
            continue
        fix = (f"modprobe {name} && echo {name} >> /etc/modules-load.d/k3py.conf"
               if state == "loadable" else
               f"use a kernel built with {key} (needed for {why})")
        out.append(Check(sec, f"module {name}", "fail" if required else "warn",
                         f"not loaded (needed for {why})" if state == "loadable"
                         else "not in this kernel", fix))
    return out


def memory_controller(root: str = "/sys/fs/cgroup", proc_cgroups: str = "/proc/cgroups"
                      ) -> bool:
    """Whether the memory cgroup controller is on (v2: in cgroup.controllers; v1: enabled
    in /proc/cgroups). Pod memory limits and the node's memory stats need it."""
    v2 = _read(os.path.join(root, "cgroup.controllers"))
    if v2:
        return "memory" in v2.split()
    for line in _read(proc_cgroups).splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[0] == "memory":
            return fields[3] == "1"
    return False


def cgroup_checks(root: str = "/sys/fs/cgroup", proc_cgroups: str = "/proc/cgroups"
                  ) -> list[Check]:
    sec = "Cgroups"
    layout = cgroup_layout(root)
    out = [Check(sec, "cgroup version", "pass" if layout != "none" else "fail",
                 {"v2": "v2 (unified)", "hybrid": "v1 with a v2 mount (hybrid)",
                  "v1": "v1", "none": "no cgroup file system"}[layout],
                 "" if layout != "none" else "mount cgroup2 on /sys/fs/cgroup (systemd does "
                 "this at boot)")]
    if layout != "none":
        ok = memory_controller(root, proc_cgroups)
        out.append(Check(sec, "memory controller", "pass" if ok else "fail",
                         "enabled" if ok else "disabled",
                         "" if ok else f"on a Raspberry Pi: {PI_CMDLINE_FIX}; elsewhere "
                         "remove cgroup_disable=memory from the kernel command line"))
    return out


def disk_check(data_dir: str) -> Check:
    """Free space where the data dir is (or would be created)."""
    path = os.path.abspath(data_dir)
    while not os.path.exists(path) and path != "/":
        path = os.path.dirname(path)
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    detail = f"{free / 1e9:.1f} GB free under {data_dir}"
    status = "fail" if free < MIN_FREE_FAIL else "warn" if free < MIN_FREE_WARN else "pass"
    return Check("System", "data-dir space", status, detail,
                 "" if status == "pass" else f"free space on that file system or choose "
                 f"another --data-dir (at least {MIN_FREE_WARN // 10**9} GB)")


def clock_check(data_dir: str, now: dt.datetime | None = None) -> Check:
    """A Pi has no battery clock: offline, it boots with an old time, and certificates are
    then 'not yet valid'. The clock must be past k3py's release and its own CA's start."""
    now = now or dt.datetime.now(dt.UTC)
    floor, why = CLOCK_FLOOR, "before k3py existed"
    ca = os.path.join(data_dir, "server", "tls", "server-ca.crt")
    if os.path.isfile(ca):
        from cryptography import x509
        with open(ca, "rb") as f:
            start = x509.load_pem_x509_certificate(f.read()).not_valid_before_utc
        if start > floor:
            floor, why = start, "before this server's CA was made"
    ok = now >= floor
    return Check("System", "clock", "pass" if ok else "fail",
                 now.strftime("%Y-%m-%dT%H:%M:%SZ") + ("" if ok else f", {why}"),
                 "" if ok else "set the time (date -s 'YYYY-MM-DD HH:MM:SS', or NTP: "
                 "timedatectl set-ntp true); offline nodes: apt-get install fake-hwclock")


# where podman looks for its pause process besides PATH (containers.conf helper_binaries_dir)
PODMAN_HELPER_DIRS = ("/usr/local/libexec/podman", "/usr/local/lib/podman", "/usr/libexec/podman",
                      "/usr/lib/podman")


def _catatonit_check(sec: str) -> Check:
    """podman builds every pod's infra (pause) image from catatonit: without it no pod starts
    ('finding pause binary'); a Recommends of Debian's podman, so missing on hosts that skip
    recommended packages."""
    found = shutil.which("catatonit") or next(
        (p for d in PODMAN_HELPER_DIRS if os.access(p := os.path.join(d, "catatonit"), os.X_OK)),
        None)
    if found is None:
        return Check(sec, "catatonit", "fail", "not found",
                     "apt-get install catatonit (podman's pause process: no pod starts without it)")
    return Check(sec, "catatonit", "pass", found)


def _podman_checks() -> list[Check]:
    sec = "Container runtime"
    podman = shutil.which("podman")
    if podman is None:
        return [Check(sec, "podman", "warn", "not found",
                      "apt-get install podman runc (needed to run pods on this node; the API "
                      "server works without it)")]
    version = _output([podman, "--version"]) or "unknown"
    ok = _version_tuple(version) >= MIN_PODMAN
    out = [Check(sec, "podman", "pass" if ok else "warn", version.removeprefix("podman "),
                 "" if ok else "upgrade to podman 4 or newer")]
    for tool, required in (("conmon", True), ("runc", False)):
        path = shutil.which(tool)
        if path is None:
            out.append(Check(sec, tool, "fail" if required else "warn", "not found",
                             f"apt-get install {tool}" + ("" if required else
                                                          " (the OCI runtime k3py tests)")))
            continue
        first = (_output([path, "--version"]).splitlines() or ["unknown"])[0]
        out.append(Check(sec, tool, "pass", first.removeprefix(f"{tool} ")))
    out.append(_catatonit_check(sec))
    conf, conf_error = read_containers_conf()
    if conf_error:
        out.append(Check(sec, "containers.conf", "fail", conf_error,
                         f"fix the TOML syntax in {CONTAINERS_CONF}"))
    layout = cgroup_layout()
    runtime = conf.get("engine", {}).get("runtime", "")
    if layout in ("v1", "hybrid"):
        runc = shutil.which("runc")
        if runtime == "runc" and runc:
            out.append(Check(sec, "OCI runtime", "pass", f"cgroups {layout}, runtime = runc"))
        elif runtime == "runc":
            out.append(Check(sec, "OCI runtime", "fail", "runtime = runc but no runc binary",
                             "apt-get install runc"))
        else:
            out.append(Check(sec, "OCI runtime", "fail",
                             f"cgroups {layout}, runtime = {runtime or 'default (crun)'}",
                             f'crun fails on cgroup v1/hybrid hosts: put runtime = "runc" '
                             f"under [engine] in {CONTAINERS_CONF} and apt-get install runc"))
    else:
        out.append(Check(sec, "OCI runtime", "pass",
                         f"cgroups {layout}, runtime = {runtime or 'default'}"))
    forbidden, hard = nofile_raise_forbidden()
    if forbidden:
        nofile = _ulimit_values(conf.get("containers", {}).get("default_ulimits"), "nofile")
        ok = nofile is not None and nofile[1] <= hard
        given = f"nofile={nofile[0]}:{nofile[1]}" if nofile else "podman's default 1048576"
        out.append(Check(sec, "container ulimits", "pass" if ok else "fail",
                         f"host nofile hard limit {hard}, may not be raised; containers get "
                         f"{given}",
                         "" if ok else 'add default_ulimits = ["nofile=1024:1024", '
                         f'"nproc=4096:4096"] under [containers] in {CONTAINERS_CONF}'))
    else:
        out.append(Check(sec, "container ulimits", "pass", f"nofile hard limit {hard}"))
    out.append(_api_check(sec))
    return out


def _api_check(sec: str) -> Check:
    """The agent talks to podman through its libpod API: a running system service is used,
    otherwise the agent starts one; either way is fine, this says which will happen."""
    from k3py.agent.runtime.libpod import ping, system_sockets
    for path in system_sockets():
        if os.path.exists(path) and asyncio.run(ping(path)):
            return Check(sec, "podman API", "pass", f"system service at {path}")
    return Check(sec, "podman API", "pass", "no system service running: the agent starts "
                 "its own (podman system service on <data-dir>/agent/podman.sock)")


def _port_checks() -> list[Check]:
    out = []
    for port, what in PORTS:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
                out.append(Check("Ports", f"{port} ({what})", "pass", "free"))
            except PermissionError:
                out.append(Check("Ports", f"{port} ({what})", "warn", "needs root",
                                 "run the server as root (ports below 1024)"))
            except OSError:
                out.append(Check("Ports", f"{port} ({what})", "warn", "in use",
                                 f"stop what listens on {port} (is {PROGRAM} already "
                                 f"running?) or choose another port"))
    return out


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _runs(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _output(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def run_checks(data_dir: str = DEFAULT_DATA_DIR) -> list[Check]:
    return (_system_checks() + [disk_check(data_dir), clock_check(data_dir)] +
            kernel_checks() + cgroup_checks() + _podman_checks() + _port_checks())


_COLORS = {"pass": "\033[32m", "warn": "\033[33m", "fail": "\033[31m"}


def format_report(checks: list[Check], color: bool = False) -> str:
    lines: list[str] = []
    section = ""
    for c in checks:
        if c.section != section:
            section = c.section
            lines += ([""] if lines else []) + [f"{section}:"]
        status = f"{_COLORS[c.status]}{c.status}\033[0m" if color else c.status
        fix = f" (fix: {c.advice})" if c.advice and c.status != "pass" else ""
        lines.append(f"- {c.name}: " + (f"{c.detail}: " if c.detail else "") + status + fix)
    fails = sum(c.status == "fail" for c in checks)
    warns = sum(c.status == "warn" for c in checks)
    summary = "fail" if fails else "pass"
    extra = ", ".join(p for p in (f"{fails} failed" if fails else "",
                                  f"{warns} warning{'s' * (warns != 1)}" if warns else "") if p)
    lines += ["", f"STATUS: {summary}" + (f" ({extra})" if extra else "")]
    return "\n".join(lines)


def check_config_command(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        raise HelpRequested(f"USAGE:\n   {PROGRAM} check-config [--data-dir DIR]\n\nChecks "
                            f"this host for what {PROGRAM} needs, one line per check with its "
                            f"fix; exit 1 when a required check fails.")
    extra: list[str] = []
    values = parse(argv, CHECK_CONFIG, positional=extra)
    if extra:
        raise UsageError(f"'{PROGRAM} check-config' takes no arguments (got {extra[0]!r})")
    checks = run_checks(values.get("data_dir", DEFAULT_DATA_DIR))
    print(format_report(checks, color=sys.stdout.isatty()))
    return 1 if any(c.status == "fail" for c in checks) else 0
