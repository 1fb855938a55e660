"""Routes to the other nodes' pod CIDRs, flannel host-gw style: for every other Node with an
InternalIP and a pod CIDR, `podCIDR via nodeIP` when that IP is on one of this node's own
subnets (the same link, up: no tunnel needed); nodes not reachable that way get no route, and
are reached through the tunnel (`tunnelled_cidrs`; tunnelproxy.py), their pod CIDRs routed to
lo so that the node's own connections find a route before the service rules' DNAT. `watch_links` says when
the node's links change, so a cut link moves its nodes to the tunnel and back.

`desired_routes` and `route_changes` are pure (unit-tested); `RouteTable` applies them with
the `ip` command (iproute2), marking its routes with its own protocol number so that it finds
and removes what it added before, also after a restart. The routes stay when the agent stops
(its pods keep running), as flannel's do. Forwarding is switched on (net.ipv4.ip_forward),
as flannel does.

Dual-stack: a Node's IPv6 pod CIDR is routed via its IPv6 InternalIP (`--node-ip v4,v6`) on
the same terms, and IPv6 forwarding switched on once any Node has an IPv6 pod CIDR. IPv6 pod
CIDRs of nodes without such a route are not tunnelled (the tunnel proxy is IPv4)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Callable

__all__ = ["desired_routes", "route_changes", "local_networks", "RouteTable", "ROUTE_PROTO",
           "pod_cidrs", "tunnelled_cidrs", "watch_links"]

log = logging.getLogger("k3py.network")

ROUTE_PROTO = "201"  # the routes k3py adds (iproute2's proto number; 0-4 are the kernel's)
_FORWARD = {4: "/proc/sys/net/ipv4/ip_forward", 6: "/proc/sys/net/ipv6/conf/all/forwarding"}

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def pod_cidrs(node: dict, version: int = 4) -> list[str]:
    """A Node's pod CIDRs of one IP version (4 or 6), normalized."""
    spec = node.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    nets = (_net(c) for c in cidrs if isinstance(c, str))
    return [str(n) for n in nets if n is not None and n.version == version]


def internal_ip(node: dict, version: int = 4) -> str:
    """A Node's InternalIP of one IP version ("" when it has none)."""
    for a in (node.get("status") or {}).get("addresses") or []:
        net = _net(f"{a.get('address')}") if a.get("type") == "InternalIP" else None
        if net is not None and net.version == version:
            return str(net.network_address)
    return ""


def desired_routes(nodes: list[dict], own_node: str, local: list[Interface]) -> dict[str, str]:
    """pod CIDR -> next hop (the node's InternalIP of the CIDR's version) for each other node
    whose InternalIP is on one of the `local` subnets (and is not one of our own addresses)."""
    own_ips = {i.ip for i in local}
    out: dict[str, str] = {}
    for node in nodes:
        if ((node.get("metadata") or {}).get("name") or "") == own_node:
            continue
        for version in (4, 6):
            ip = internal_ip(node, version)
            if not ip or ipaddress.ip_address(ip) in own_ips:
                continue
            addr = ipaddress.ip_address(ip)
            if not any(addr in i.network for i in local
                       if i.version == version and i.network.prefixlen < i.max_prefixlen):
                continue
            for cidr in pod_cidrs(node, version):
                out[cidr] = ip
    return out


def tunnelled_cidrs(nodes: list[dict], own_node: str, routed: dict[str, str]) -> list[str]:
    """The other nodes' pod CIDRs that have no route (`routed`: desired_routes'): those nodes
    are reached through the tunnel (tunnelproxy.py)."""
    out = {c for n in nodes if ((n.get("metadata") or {}).get("name") or "")
           != own_node for c in pod_cidrs(n)}
    return sorted(out - set(routed))


async def watch_links(changed: Callable[[], None]) -> None:
    """Call `changed` whenever a link or an address of this node changes (`ip monitor`),
    until cancelled: a link going down or up changes which nodes are routed to."""
    while True:
        try:
            proc = await asyncio.create_subprocess_exec(
                "ip", "-o", "monitor", "link", "address", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL)
        except OSError as e:
            log.warning("cannot watch the node's links (%s): routes follow Node changes only",
                        e.strerror or e)
            return
        try:
            assert proc.stdout is not None
            while await proc.stdout.readline():
                changed()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await asyncio.sleep(1.0)  # `ip monitor` ended: start it again


def route_changes(current: dict[str, str], desired: dict[str, str]
                  ) -> tuple[dict[str, str], list[str]]:
    """(routes to add or replace: cidr -> via, cidrs whose route goes)."""
    put = {c: via for c, via in desired.items() if current.get(c) != via}
    gone = sorted(c for c in current if c not in desired)
    return put, gone


def local_networks(ip_addr_json: list[dict]) -> list[Interface]:
    """This node's addresses with their subnets, from `ip -j addr show`, on the links that
    are up (with a carrier: a cut cable or a peer gone takes its subnet out), without
    loopback's and IPv6 link-local ones."""
    out: list[Interface] = []
    for link in ip_addr_json:
        flags = link.get("flags") or []
        if "LOOPBACK" in flags or "UP" not in flags or "LOWER_UP" not in flags:
            continue
        for a in link.get("addr_info") or []:
            if a.get("family") == "inet" and a.get("local"):
                out.append(ipaddress.IPv4Interface(f"{a['local']}/{a.get('prefixlen', 32)}"))
            elif a.get("family") == "inet6" and a.get("local") and \
                    not ipaddress.IPv6Address(a["local"]).is_link_local:
                out.append(ipaddress.IPv6Interface(f"{a['local']}/{a.get('prefixlen', 128)}"))
    return out


class RouteTable:
    """The node's host-gw routes, applied with `ip route` and read back by their protocol."""

    def __init__(self) -> None:
        self.routes: dict[str, str] | None = None  # as last read or applied
        self.desired: dict[str, str] = {}  # pod CIDR -> node IP, as of the last sync
        self.local: list[Interface] = []  # this node's subnets, as of then
        self._failed = False
        self._v6_forwarding = False  # switched on once a Node has an IPv6 pod CIDR

    async def networks_changed(self) -> bool:
        """Whether this node's subnets (on links that are up) differ from the last sync's."""
        return await _local_networks() != self.local

    async def sync(self, nodes: list[dict], own_node: str) -> None:
        local = self.local = await _local_networks()
        if self.routes is None:
            self.routes = await self._read()
            _enable_forwarding(4)
        if not self._v6_forwarding and any(pod_cidrs(n, 6) for n in nodes):
            self._v6_forwarding = _enable_forwarding(6)
        self.desired = desired_routes(nodes, own_node, local)
        # the tunnelled CIDRs go to lo: the node's own connections to them find a route, and
        # the service rules' DNAT then sends them to the tunnel proxy (nothing else leaves)
        tunnel = dict.fromkeys(tunnelled_cidrs(nodes, own_node, self.desired), "")
        put, gone = route_changes(self.routes, {**self.desired, **tunnel})
        for cidr in gone:
            await self._change("del", cidr, "")
        for cidr, via in put.items():
            await self._change("replace", cidr, via)

    async def _change(self, op: str, cidr: str, via: str) -> None:
        assert self.routes is not None
        to = ["via", via] if via else ["dev", "lo"] if op == "replace" else []
        args = [*(["-6"] if ":" in cidr else []), "route", op, cidr, *to, "proto", ROUTE_PROTO]
        try:
            await _ip(*args)
        except OSError as e:
            log.warning("ip %s: %s", " ".join(args), e)
            if op == "del":
                self.routes.pop(cidr, None)  # gone already
            return
        if op == "del":
            self.routes.pop(cidr, None)
            log.info("route to pod CIDR %s removed", cidr)
        else:
            self.routes[cidr] = via
            log.info("route to pod CIDR %s via %s", cidr, via or "lo (the tunnel)")

    async def _read(self) -> dict[str, str]:
        out = []
        for family in ("-4", "-6"):
            out += json.loads(await _ip("-j", family, "route", "show", "proto", ROUTE_PROTO)
                              or "[]")
        return {str(net): r.get("gateway", "") for r in out
                if r.get("dst") and (net := _net(r["dst"])) is not None}


def _enable_forwarding(version: int) -> bool:
    path = _FORWARD[version]
    name = "net.ipv4.ip_forward" if version == 4 else "net.ipv6.conf.all.forwarding"
    try:
        with open(path) as f:
            if f.read().strip() == "1":
                return True
        with open(path, "w") as f:
            f.write("1")
        log.info("IPv%d forwarding switched on (%s=1) for pod traffic", version, name)
        return True
    except OSError as e:
        log.warning("cannot switch on IPv%d forwarding (%s): pods on other nodes cannot "
                    "reach this node's pods", version, e.strerror or e)
        return False


async def _local_networks() -> list[Interface]:
    return local_networks(json.loads(await _ip("-j", "addr", "show") or "[]"))


async def _ip(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise OSError(err.decode(errors="replace").strip() or f"ip exited {proc.returncode}")
    return out.decode()


def _net(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None
