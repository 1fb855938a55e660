"""Routes to the other nodes' pod CIDRs, flannel host-gw style: for every other Node with an
InternalIP and a pod CIDR, `podCIDR via nodeIP` when that IP is on one of this node's own
subnets (the same link: no tunnel needed); nodes not reachable that way get no route.

`desired_routes` and `route_changes` are pure (unit-tested); `RouteTable` applies them with
the `ip` command (iproute2), marking its routes with its own protocol number so that it finds
and removes what it added before, also after a restart. The routes stay when the agent stops
(its pods keep running), as flannel's do. Forwarding is switched on (net.ipv4.ip_forward),
as flannel does."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging

__all__ = ["desired_routes", "route_changes", "local_networks", "RouteTable", "ROUTE_PROTO",
           "pod_cidrs"]

log = logging.getLogger("k3py.network")

ROUTE_PROTO = "201"  # the routes k3py adds (iproute2's proto number; 0-4 are the kernel's)
_FORWARD = "/proc/sys/net/ipv4/ip_forward"


def pod_cidrs(node: dict) -> list[str]:
    """A Node's IPv4 pod CIDRs."""
    spec = node.get("spec") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    return [c for c in cidrs if isinstance(c, str) and _v4_net(c) is not None]


def internal_ip(node: dict) -> str:
    """A Node's IPv4 InternalIP ("" when it has none)."""
    for a in (node.get("status") or {}).get("addresses") or []:
        if a.get("type") == "InternalIP" and _v4_net(f"{a.get('address')}/32") is not None:
            return str(a["address"])
    return ""


def desired_routes(nodes: list[dict], own_node: str,
                   local: list[ipaddress.IPv4Interface]) -> dict[str, str]:
    """pod CIDR -> next hop (the node's InternalIP) for each other node whose InternalIP is
    on one of the `local` subnets (and is not one of our own addresses)."""
    own_ips = {i.ip for i in local}
    out: dict[str, str] = {}
    for node in nodes:
        if ((node.get("metadata") or {}).get("name") or "") == own_node:
            continue
        ip = internal_ip(node)
        if not ip or ipaddress.IPv4Address(ip) in own_ips:
            continue
        addr = ipaddress.IPv4Address(ip)
        if not any(addr in i.network for i in local if i.network.prefixlen < 32):
            continue
        for cidr in pod_cidrs(node):
            out[str(_v4_net(cidr))] = ip
    return out


def route_changes(current: dict[str, str], desired: dict[str, str]
                  ) -> tuple[dict[str, str], list[str]]:
    """(routes to add or replace: cidr -> via, cidrs whose route goes)."""
    put = {c: via for c, via in desired.items() if current.get(c) != via}
    gone = sorted(c for c in current if c not in desired)
    return put, gone


def local_networks(ip_addr_json: list[dict]) -> list[ipaddress.IPv4Interface]:
    """This node's IPv4 addresses with their subnets, from `ip -j -4 addr show`, without
    loopback's."""
    out = []
    for link in ip_addr_json:
        if "LOOPBACK" in (link.get("flags") or []):
            continue
        for a in link.get("addr_info") or []:
            if a.get("family") == "inet" and a.get("local"):
                out.append(ipaddress.IPv4Interface(f"{a['local']}/{a.get('prefixlen', 32)}"))
    return out


class RouteTable:
    """The node's host-gw routes, applied with `ip route` and read back by their protocol."""

    def __init__(self) -> None:
        self.routes: dict[str, str] | None = None  # as last read or applied
        self._failed = False

    async def sync(self, nodes: list[dict], own_node: str) -> None:
        local = local_networks(json.loads(await _ip("-j", "-4", "addr", "show") or "[]"))
        if self.routes is None:
            self.routes = await self._read()
            _enable_forwarding()
        put, gone = route_changes(self.routes, desired_routes(nodes, own_node, local))
        for cidr in gone:
            await self._change("del", cidr, "")
        for cidr, via in put.items():
            await self._change("replace", cidr, via)

    async def _change(self, op: str, cidr: str, via: str) -> None:
        assert self.routes is not None
        args = ["route", op, cidr, *(["via", via] if via else []), "proto", ROUTE_PROTO]
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
            log.info("route to pod CIDR %s via %s", cidr, via)

    async def _read(self) -> dict[str, str]:
        out = json.loads(await _ip("-j", "-4", "route", "show", "proto", ROUTE_PROTO) or "[]")
        return {str(_v4_net(r["dst"])): r.get("gateway", "") for r in out
                if r.get("dst") and _v4_net(r["dst"]) is not None}


def _enable_forwarding() -> None:
    try:
        with open(_FORWARD) as f:
            if f.read().strip() == "1":
                return
        with open(_FORWARD, "w") as f:
            f.write("1")
        log.info("IPv4 forwarding switched on (net.ipv4.ip_forward=1) for pod traffic")
    except OSError as e:
        log.warning("cannot switch on IPv4 forwarding (%s): pods on other nodes cannot "
                    "reach this node's pods", e.strerror or e)


async def _ip(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise OSError(err.decode(errors="replace").strip() or f"ip exited {proc.returncode}")
    return out.decode()


def _v4_net(cidr: str) -> ipaddress.IPv4Network | None:
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None
    return net if isinstance(net, ipaddress.IPv4Network) else None
