"""Network namespaces joined to the host by a veth pair, for tests that cut a node's link.

Each `NetNS` is `k3py-<id>` with one veth pair: host side `k3h<id>` = 10.203.<n>.1/30, inside
`k3n<id>` = 10.203.<n>.2/30, loopback up inside. No default route, no forwarding, no NAT: the
namespace reaches the host's .1 address and nothing else. `cut()` / `restore()` set the host
side down / up (the inside loses carrier, as when a cable or Wi-Fi link drops).

    with NetNS() as ns:                 # or the `netns_factory` fixture
        proc = ns.popen(["python", "-m", "k3py", "agent", ...], stdout=log)
        ns.cut(); ...; ns.restore()
        ns.link(other); ns.set_link(False); ...     # a direct link between two namespaces

Everything is undone on exit, also on failure: processes started inside are killed, then the
namespace is deleted (which deletes both veth ends). `require_netns()` skips the test with the
reason when `ip netns` is not permitted here (not root, no CAP_NET_ADMIN/CAP_SYS_ADMIN, no ip).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid

import pytest

__all__ = ["NetNS", "netns_available", "require_netns", "netns_factory"]

PREFIX = "k3py-"
_SUBNET = "10.203"
_LINK_SUBNET = "10.204"  # links between two namespaces (NetNS.link), inside them only


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({out.returncode}): "
                           f"{out.stderr.strip() or out.stdout.strip()}")
    return out


_availability: tuple[bool, str] | None = None


def netns_available() -> tuple[bool, str]:
    """(True, "") if a namespace with a veth pair can be made here, else (False, why)."""
    global _availability
    if _availability is not None:
        return _availability
    if shutil.which("ip") is None:
        _availability = (False, "the `ip` command (iproute2) is not installed")
        return _availability
    probe = f"{PREFIX}probe-{uuid.uuid4().hex[:6]}"
    dev = f"k3p{uuid.uuid4().hex[:8]}"
    try:
        out = _ip("netns", "add", probe, check=False)
        if out.returncode != 0:
            _availability = (False, f"`ip netns add` is not permitted here: "
                                    f"{out.stderr.strip() or out.returncode}")
            return _availability
        out = _ip("link", "add", dev, "type", "veth", "peer", "name", dev + "p",
                  "netns", probe, check=False)
        if out.returncode != 0:
            _availability = (False, f"cannot create a veth pair: {out.stderr.strip()}")
            return _availability
        _availability = (True, "")
        return _availability
    finally:
        _ip("link", "del", dev, check=False)
        _ip("netns", "del", probe, check=False)


def require_netns() -> None:
    ok, why = netns_available()
    if not ok:
        pytest.skip(why)


def _used_subnets() -> set[int]:
    used: set[int] = set()
    out = _ip("-4", "-o", "addr", "show", check=False).stdout
    for word in out.split():
        if word.startswith(_SUBNET + "."):
            with contextlib.suppress(ValueError, IndexError):
                used.add(int(word.split(".")[2]))
    return used


class NetNS:
    """One namespace + veth pair. Use as a context manager, or call create() / destroy()."""

    def __init__(self, ident: str | None = None) -> None:
        self.id = ident or uuid.uuid4().hex[:8]
        self.name = PREFIX + self.id
        self.host_dev = "k3h" + self.id[:11]   # IFNAMSIZ: 15 characters
        self.ns_dev = "k3n" + self.id[:11]
        self.subnet: int | None = None
        self.procs: list[subprocess.Popen] = []
        self.created = False

    @property
    def host_ip(self) -> str:
        return f"{_SUBNET}.{self.subnet}.1"

    @property
    def ns_ip(self) -> str:
        return f"{_SUBNET}.{self.subnet}.2"

    # ------------------------------------------------------------------ lifecycle

    def create(self) -> NetNS:
        try:
            _ip("netns", "add", self.name)
            self.created = True
            _ip("link", "add", self.host_dev, "type", "veth", "peer", "name", self.ns_dev,
                "netns", self.name)
            self._address()
            _ip("link", "set", self.host_dev, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
            _ip("-n", self.name, "link", "set", self.ns_dev, "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def _address(self) -> None:
        # a /30 nobody on this host uses yet; a concurrent test may take the same one between
        # the scan and `addr add`, so verify by adding and retry on a clash
        for _attempt in range(20):
            used = _used_subnets()
            free = [n for n in range(1, 255) if n not in used]
            if not free:
                raise RuntimeError(f"no free /30 left in {_SUBNET}.0.0/16")
            self.subnet = free[sum(map(ord, self.id)) % len(free)] if _attempt == 0 else free[0]
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_dev)
            clash = [line for line in _ip("-4", "-o", "addr", "show", check=False)
                     .stdout.splitlines() if f" {self.host_ip}/" in line]
            if len(clash) == 1:
                break
            _ip("addr", "del", f"{self.host_ip}/30", "dev", self.host_dev, check=False)
        else:
            raise RuntimeError("could not find a free /30 for the namespace")
        _ip("-n", self.name, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_dev)

    def destroy(self) -> None:
        for proc in self.procs:
            _kill(proc)
        self.procs.clear()
        if self.created:
            _ip("netns", "del", self.name, check=False)
            self.created = False
        # deleting the namespace deletes the inner end and with it the pair; be sure anyway
        if _ip("link", "show", self.host_dev, check=False).returncode == 0:
            _ip("link", "del", self.host_dev, check=False)

    def __enter__(self) -> NetNS:
        return self.create()

    def __exit__(self, *exc) -> None:
        self.destroy()

    # ------------------------------------------------------------------ use

    def command(self, cmd: list[str]) -> list[str]:
        # `ip netns exec` also unshares the mount namespace and remounts /sys, which hides
        # /sys/fs/cgroup from podman (pods then fail: "creating cgroup for cpu"); nsenter
        # switches the network namespace only
        if shutil.which("nsenter"):
            return ["nsenter", f"--net=/run/netns/{self.name}", "--", *cmd]
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 30)
        return subprocess.run(self.command(cmd), **kw)

    def popen(self, cmd: list[str], **kw) -> subprocess.Popen:
        """A process inside the namespace, in its own process group; killed by destroy()."""
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.command(cmd), **kw)
        self.procs.append(proc)
        return proc

    def link(self, other: NetNS, ipv6: bool = False) -> tuple[str, str]:
        """A direct veth link between this namespace and `other` (one L2 segment, as two
        nodes on one LAN), 10.204.<n>.1/30 here and .2/30 there; (this end's IP, the other's).
        `ipv6`: also fd00:204:<n>::1/64 and ::2/64, each end's IPs then "v4,v6". Deleting
        either namespace deletes the link."""
        assert self.subnet is not None, "create() first"
        here, there = f"{_LINK_SUBNET}.{self.subnet}.1", f"{_LINK_SUBNET}.{self.subnet}.2"
        dev, peer = "k3l" + self.id[:11], "k3m" + other.id[:11]
        _ip("-n", self.name, "link", "add", dev, "type", "veth", "peer", "name", peer,
            "netns", other.name)
        for ns, name, ip in ((self, dev, here), (other, peer, there)):
            _ip("-n", ns.name, "addr", "add", f"{ip}/30", "dev", name)
            _ip("-n", ns.name, "link", "set", name, "up")
        if not ipv6:
            return here, there
        ends = []
        for ns, name, v4, last in ((self, dev, here, 1), (other, peer, there, 2)):
            v6 = f"fd00:{_LINK_SUBNET.split('.')[1]}:{self.subnet}::{last}"
            _ip("-n", ns.name, "addr", "add", f"{v6}/64", "dev", name, "nodad")
            ends.append(f"{v4},{v6}")
        return ends[0], ends[1]

    def set_link(self, up: bool) -> None:
        """This namespace's end of the link it made with `link()` up or down (the other end
        loses its carrier, as when the cable between two nodes is pulled)."""
        _ip("-n", self.name, "link", "set", "k3l" + self.id[:11], "up" if up else "down")

    def cut(self) -> None:
        _ip("link", "set", self.host_dev, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_dev, "up")

    def link_up(self) -> bool:
        return "state UP" in _ip("link", "show", self.host_dev).stdout


def _kill(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def netns_factory():
    """`make()` -> a new NetNS; all of them are destroyed at teardown (skips if not permitted)."""
    require_netns()
    made: list[NetNS] = []

    def make() -> NetNS:
        ns = NetNS()
        made.append(ns)  # before create(): destroy() is safe on a half-made namespace
        return ns.create()
    try:
        yield make
    finally:
        for ns in reversed(made):
            ns.destroy()
