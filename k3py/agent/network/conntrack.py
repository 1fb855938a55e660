"""Conntrack cleanup after service rule changes, as kube-proxy does: a UDP flow keeps going to
the endpoint its conntrack entry names, even after the rules stop choosing it, so the entries
of removed UDP endpoints are deleted (per ClusterIP and node port); and a UDP service port
that had no endpoint (its packets rejected, maybe cached) gets its entries deleted once it has
some. TCP is left alone: a removed endpoint's connections end by themselves, and an endpoint
only going unready keeps its open connections (graceful termination).

`stale_entries` is pure (unit-tested); `flush` runs the `conntrack` tool (Debian's conntrack
package); without it, a warning once and nothing flushed."""

from __future__ import annotations

import asyncio
import logging
import shutil

from k3py.agent.network.proxy import ServicePort

__all__ = ["stale_entries", "Conntrack"]

log = logging.getLogger("k3py.network")

Entry = tuple[str, int, str]  # (original destination IP or "" for a node port, port, reply source)


def _flows(ports: list[ServicePort]) -> set[Entry]:
    out: set[Entry] = set()
    for sp in ports:
        if sp.protocol != "udp":
            continue
        for ep in sp.endpoints:
            out.update((ip, sp.port, ep.ip) for ip in sp.cluster_ips)
            if sp.node_port:
                out.add(("", sp.node_port, ep.ip))
    return out


def _unserved(ports: list[ServicePort]) -> set[tuple[str, int]]:
    return {(ip, sp.port) for sp in ports if sp.protocol == "udp" and not sp.endpoints
            for ip in sp.cluster_ips}


def stale_entries(before: list[ServicePort], after: list[ServicePort]) -> list[Entry]:
    """The UDP conntrack entries to delete when the rules go from `before` to `after`:
    (ClusterIP, port, endpoint IP) and ("", nodePort, endpoint IP) of endpoints gone, and
    (ClusterIP, port, "") of service ports that had no endpoint and have some now."""
    gone = _flows(before) - _flows(after)
    served = _unserved(before) - _unserved(after)
    return sorted(gone | {(ip, port, "") for ip, port in served})


class Conntrack:
    def __init__(self, netns: str = "") -> None:
        self.available = shutil.which("conntrack") is not None
        self.netns = netns  # a named network namespace (tests); "" = the agent's own
        self._warned = False

    async def flush(self, entries: list[Entry]) -> None:
        if not entries:
            return
        if not self.available:
            if not self._warned:
                log.warning("the conntrack tool is not installed: UDP flows to removed "
                            "service endpoints are not cut (apt-get install conntrack)")
                self._warned = True
            return
        for dst, port, src in entries:
            args = ["-D", "-p", "udp", "--orig-port-dst", str(port)]
            if dst:
                args += ["--orig-dst", dst]
            if src:
                args += ["--reply-src", src]
            if ":" in f"{dst}{src}":
                args = ["-f", "ipv6", *args]  # (conntrack lists IPv4 flows by default)
            await self._run(*args)

    async def _run(self, *args: str) -> None:
        cmd = ["conntrack", *args]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode not in (0, 1):  # 1: no entry matched
            log.debug("conntrack %s: %s", " ".join(args), err.decode(errors="replace").strip())
