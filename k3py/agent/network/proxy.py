"""Service routing on the node, as kube-proxy's nftables mode does it: one nftables table
(`ip k3py-proxy`) built from the Services and EndpointSlices the node holds, replaced as a
whole in one `nft -f` transaction at each change (no half-applied state, nothing left over).

- ClusterIP: `clusterIP . proto . port` -> the service port's chain, which picks a ready
  endpoint at random (`numgen random`) and DNATs to it; with sessionAffinity ClientIP a client
  sticks to the endpoint it got for timeoutSeconds (a dynamic set per endpoint, as upstream).
- NodePort (and LoadBalancer's node ports): `proto . nodePort` to a local address of the node.
- LoadBalancer: the `status.loadBalancer.ingress` addresses (ipMode VIP) with the Service's
  ports, like the node ports (K3s's ServiceLB lists node IPs there: servicelb.py).
- externalTrafficPolicy Local: node ports reach only this node's endpoints (and keep the client
  address); internalTrafficPolicy Local: the ClusterIP only this node's endpoints.
- Masquerade (mark, then masquerade in postrouting) what would not come back through this node
  otherwise: traffic from outside the pod CIDRs to a ClusterIP, node ports with policy
  Cluster, and hairpin (an endpoint reaching itself through its Service); and, as flannel
  does, traffic from this node's pods leaving the pod CIDRs (the `pod-cidrs` set: every
  Node's pod CIDR), so pod-to-pod traffic keeps its addresses.
- A service port with no ready endpoint is rejected (ICMP port unreachable / TCP reset) rather
  than left to time out; headless and ExternalName Services get no rules.

Dual-stack: the IPv6 ClusterIPs, node ports, LoadBalancer addresses and endpoints go in a
table of the same name in the `ip6` family, built by the same code (`family=6`) and loaded in
the same transaction; it is declared and deleted on every load, so a node that has no IPv6
left keeps none. The tunnel path is IPv4 only.

`build_ruleset(...)` returns the nft script (pure, tested by loading it with `nft -c`);
`apply(script)` loads it. The nft command is the kernel interface, as the issue asks."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from dataclasses import dataclass, field

from k3py.agent.network.records import ready_endpoints
from k3py.api.servicelb import ingress_ips, source_ranges

__all__ = ["TABLE", "ServicePort", "Endpoint", "service_ports", "mark_tunnelled",
           "build_ruleset", "apply", "delete", "NftError"]

TABLE = "k3py-proxy"
MASQ_MARK = 0x4000
_PROTOS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


class NftError(Exception):
    """nft refused a ruleset (its message)."""


@dataclass
class Endpoint:
    ip: str
    port: int
    local: bool
    via_tunnel: bool = False  # on a node this one cannot route to (tunnelproxy.py)


@dataclass
class ServicePort:
    """One port of one Service with the endpoints it routes to."""
    namespace: str
    name: str
    port_name: str
    protocol: str  # tcp / udp / sctp
    port: int
    cluster_ips: list[str]
    node_port: int = 0
    external_local: bool = False
    internal_local: bool = False
    affinity_seconds: int = 0  # sessionAffinity ClientIP timeout, 0 = none
    lb_ips: list[str] = field(default_factory=list)  # LoadBalancer ingress addresses
    source_ranges: list[str] = field(default_factory=list)  # clients lb_ips accept ([]: all)
    endpoints: list[Endpoint] = field(default_factory=list)

    @property
    def id(self) -> str:
        key = f"{self.namespace}/{self.name}/{self.protocol}/{self.port_name or self.port}"
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    @property
    def family(self) -> int:
        return 6 if ":" in self.cluster_ips[0] else 4

    @property
    def comment(self) -> str:
        return f"{self.namespace}/{self.name}:{self.port_name or self.port}"


def service_ports(services: list[dict], slices: list[dict], node_name: str,
                  family: int = 4) -> list[ServicePort]:
    """The routable ports of `services` in one IP family (4 or 6) with their ready endpoints
    of that family from `slices`."""
    by_service: dict[tuple[str, str], list[dict]] = {}
    for es in slices:
        md = es.get("metadata") or {}
        owner = (md.get("labels") or {}).get("kubernetes.io/service-name")
        if owner and es.get("addressType", "IPv4") == f"IPv{family}":
            by_service.setdefault((md.get("namespace") or "default", owner), []).append(es)
    out = []
    for svc in services:
        md, spec = svc.get("metadata") or {}, svc.get("spec") or {}
        ns, name = md.get("namespace") or "default", md.get("name") or ""
        if spec.get("type") == "ExternalName":
            continue
        ips = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]
               if ip and ip != "None" and _version(ip) == family]
        if not ips:
            continue  # headless (or none of this family)
        affinity = 0
        if spec.get("sessionAffinity") == "ClientIP":
            cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
            affinity = int(cfg.get("timeoutSeconds") or 10800)
        for p in spec.get("ports") or []:
            proto = _PROTOS.get(str(p.get("protocol") or "TCP"))
            if proto is None or not isinstance(p.get("port"), int):
                continue
            sp = ServicePort(
                ns, name, str(p.get("name") or ""), proto, p["port"], ips,
                node_port=int(p.get("nodePort") or 0)
                if spec.get("type") in ("NodePort", "LoadBalancer") else 0,
                external_local=spec.get("externalTrafficPolicy") == "Local",
                internal_local=spec.get("internalTrafficPolicy") == "Local",
                affinity_seconds=affinity,
                lb_ips=[ip for ip in ingress_ips(svc) if _version(ip) == family]
                if spec.get("type") == "LoadBalancer" else [],
                source_ranges=[r for r in source_ranges(svc) or []
                               if (":" in r) == (family == 6)])
            sp.endpoints = _endpoints(by_service.get((ns, name), []), sp, node_name)
            out.append(sp)
    return out


def _endpoints(slices: list[dict], sp: ServicePort, node_name: str) -> list[Endpoint]:
    seen: dict[tuple[str, int], Endpoint] = {}
    for es in slices:
        port = next((q.get("port") for q in es.get("ports") or []
                     if str(q.get("name") or "") == sp.port_name
                     and _PROTOS.get(str(q.get("protocol") or "TCP")) == sp.protocol), None)
        if not isinstance(port, int):
            continue
        for ep, addrs in ready_endpoints(es):
            for ip in addrs:
                if _version(ip) == sp.family:
                    seen[(ip, port)] = Endpoint(ip, port, ep.get("nodeName") == node_name)
    return sorted(seen.values(), key=lambda e: (e.ip, e.port))


def mark_tunnelled(ports: list[ServicePort], tunnel_cidrs: list[str]) -> None:
    """Mark the endpoints in `tunnel_cidrs` (pod CIDRs of nodes reached only through the
    tunnel)."""
    nets = [ipaddress.IPv4Network(c) for c in tunnel_cidrs]
    for sp in ports:
        for e in sp.endpoints:
            e.via_tunnel = any(ipaddress.IPv4Address(e.ip) in n for n in nets)


def _reachable(eps: list[Endpoint], sp: ServicePort, tunnel_proxy: str,
               udp_proxies: dict[str, str]) -> list[Endpoint]:
    """The endpoints the kernel routes to; only when there are none, the tunnel proxy (one
    address that picks among the tunnelled ones: tunnelproxy.py): its listener for TCP, the
    port's own socket for UDP."""
    direct = [e for e in eps if not e.via_tunnel]
    proxy = tunnel_proxy if sp.protocol == "tcp" else udp_proxies.get(sp.id, "")
    if direct or not eps or not proxy:
        return direct
    ip, _, port = proxy.rpartition(":")
    return [Endpoint(ip, int(port), False)]


def build_ruleset(ports: list[ServicePort], *, pod_cidrs: tuple[str, ...] = (),
                  own_pod_cidr: str = "", table: str = TABLE,
                  masquerade_all: bool = False, tunnel_cidrs: tuple[str, ...] = (),
                  tunnel_proxy: str = "", udp_proxies: dict[str, str] | None = None,
                  family: int = 4) -> str:
    """The whole table as one nft script: declared, flushed by deleting it, and written
    again, so loading it replaces what was there in one transaction. `table`: one per cluster
    (two k3py clusters on one host keep their own). `pod_cidrs`: the cluster's pod CIDRs
    (ClusterIP traffic from elsewhere is masqueraded); `own_pod_cidr`: this node's, whose
    traffic leaving `pod_cidrs` is masqueraded. `masquerade_all`: ClusterIP traffic is
    masqueraded too, as kube-proxy's masqueradeAll (needed while pods share podman's default
    bridge with no pod CIDR per node: a reply must come back through the node).
    `tunnel_proxy` ("IP:port", tunnelproxy.py): TCP to `tunnel_cidrs` (pod CIDRs of nodes
    this one cannot route to), and to Services whose only endpoints are there, goes to it;
    connections to it that were not DNATed here are dropped. `udp_proxies` (service port id:
    "IP:port"): the same for a UDP Service port, whose datagrams go to a socket of its own.
    `family` 6: the `ip6` table of the IPv6 ports (no tunnel)."""
    udp_proxies = udp_proxies or {}
    nf = _FAMILIES[family]
    l3 = nf.ip
    lines = [f"table {l3} {table} {{}}", f"delete table {l3} {table}", f"table {l3} {table} {{"]
    vmap_ips: list[str] = []
    vmap_nodeports: list[str] = []
    rejects: list[str] = []
    chains: list[str] = []
    seen: set[str] = set()  # an address and port twice (stale LoadBalancer status): first wins
    for sp in ports:
        cluster_eps = _reachable([e for e in sp.endpoints if e.local or not sp.internal_local],
                                 sp, tunnel_proxy, udp_proxies)
        ext_eps = _reachable([e for e in sp.endpoints if e.local or not sp.external_local],
                             sp, tunnel_proxy, udp_proxies)
        lb_chain = "fw" if sp.source_ranges else "ext"
        for ip, chain, eps in [*((ip, "svc", cluster_eps) for ip in sp.cluster_ips),
                               *((ip, lb_chain, ext_eps) for ip in sp.lb_ips)]:
            key = f"{ip} . {sp.protocol} . {sp.port}"
            if key in seen:
                continue
            seen.add(key)
            if eps:
                vmap_ips.append(f"{key} : goto {chain}-{sp.id}")
            else:
                rejects.append(key)
        if sp.source_ranges and sp.lb_ips and ext_eps:
            # loadBalancerSourceRanges: other clients of the LoadBalancer addresses dropped
            chains += [f"  chain fw-{sp.id} {{",
                       f"    {l3} saddr {{ {', '.join(sp.source_ranges)} }} goto ext-{sp.id}",
                       "    drop", "  }"]
        if cluster_eps:
            chains += _service_chain(f"svc-{sp.id}", sp, cluster_eps, bool(pod_cidrs),
                                     masquerade_all=masquerade_all, nf=nf)
        if sp.node_port and ext_eps:
            vmap_nodeports.append(f"{sp.protocol} . {sp.node_port} : goto ext-{sp.id}")
        if (sp.node_port or sp.lb_ips) and ext_eps:
            chains += _service_chain(f"ext-{sp.id}", sp, ext_eps, bool(pod_cidrs),
                                     masquerade_all=not sp.external_local, nf=nf)
    to_tunnel, guard_tunnel = [], []
    if tunnel_proxy and family == 4:
        proxy_ip, _, proxy_port = tunnel_proxy.rpartition(":")
        to_tunnel = [f"    ip daddr @tunnel-cidrs meta l4proto tcp dnat to {tunnel_proxy}"]
        guard_tunnel = [f"    ip daddr {proxy_ip} tcp dport {proxy_port} ct status & dnat == 0 "
                        "drop"]
    for address in sorted(udp_proxies.values()):
        proxy_ip, _, proxy_port = address.rpartition(":")
        guard_tunnel.append(f"    ip daddr {proxy_ip} udp dport {proxy_port} ct status & dnat "
                            "== 0 drop")
    lines += [
        "  map service-ips {", f"    type {nf.addr} . inet_proto . inet_service : verdict",
        *_elements(vmap_ips), "  }",
        "  map service-nodeports {", "    type inet_proto . inet_service : verdict",
        *_elements(vmap_nodeports), "  }",
        "  set no-endpoint-services {", f"    type {nf.addr} . inet_proto . inet_service",
        *_elements(rejects), "  }",
        "  set pod-cidrs {", f"    type {nf.addr}", "    flags interval", "    auto-merge",
        *_elements(list(pod_cidrs)), "  }",
        "  chain services {",
        f"    {l3} daddr . meta l4proto . th dport vmap @service-ips",
        f"    fib daddr type local {l3} daddr != {nf.loopback} "
        "meta l4proto . th dport vmap @service-nodeports",
        "  }",
        "  set tunnel-cidrs {", f"    type {nf.addr}", "    flags interval", "    auto-merge",
        *_elements(list(tunnel_cidrs) if to_tunnel else []), "  }",
        "  chain nat-prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;", "    jump services",
        *to_tunnel, "  }",
        "  chain nat-output {",
        "    type nat hook output priority -100; policy accept;", "    jump services",
        *to_tunnel, "  }",
        "  chain nat-postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} meta mark set meta mark ^ "
        f"{MASQ_MARK:#x} masquerade fully-random",
        *([f"    {l3} saddr {own_pod_cidr} {l3} daddr != @pod-cidrs masquerade fully-random"]
          if own_pod_cidr else []),
        "  }",
        "  chain mark-for-masquerade {", f"    meta mark set meta mark | {MASQ_MARK:#x}", "  }",
        "  chain reject-no-endpoints {",
        f"    {l3} daddr . meta l4proto . th dport @no-endpoint-services "
        f"reject with {nf.icmp} type port-unreachable",
        "  }",
        "  chain filter-input {",
        "    type filter hook input priority -110; policy accept;",
        *guard_tunnel, "    jump reject-no-endpoints", "  }",
        "  chain filter-forward {",
        "    type filter hook forward priority -110; policy accept;",
        "    jump reject-no-endpoints", "  }",
        "  chain filter-output {",
        "    type filter hook output priority -110; policy accept;",
        "    jump reject-no-endpoints", "  }",
        *chains,
        "}",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Family:
    """How an nft rule spells one IP family."""
    ip: str  # the table family and address match: ip / ip6
    addr: str  # the set element type
    loopback: str
    icmp: str
    v6: bool

    def target(self, ip: str, port: int) -> str:
        return f"[{ip}]:{port}" if self.v6 else f"{ip}:{port}"


_FAMILIES = {4: _Family("ip", "ipv4_addr", "127.0.0.0/8", "icmp", False),
             6: _Family("ip6", "ipv6_addr", "::1", "icmpv6", True)}


def _service_chain(chain: str, sp: ServicePort, eps: list[Endpoint], from_pods: bool,
                   masquerade_all: bool, nf: _Family) -> list[str]:
    l3 = nf.ip
    out = [f"  chain {chain} {{", f'    comment "{sp.comment}"']
    if masquerade_all:
        out.append("    jump mark-for-masquerade")
    elif from_pods:
        out.append(f"    {l3} saddr != @pod-cidrs jump mark-for-masquerade")
    ep_chains = [f"{chain}-ep{i}" for i in range(len(eps))]
    if sp.affinity_seconds:
        for name in ep_chains:
            out.append(f"    {l3} saddr @{name}-aff goto {name}")
    if len(eps) == 1:
        out.append(f"    goto {ep_chains[0]}")
    else:
        picks = ", ".join(f"{i} : goto {name}" for i, name in enumerate(ep_chains))
        out.append(f"    numgen random mod {len(eps)} vmap {{ {picks} }}")
    out.append("  }")
    for name, ep in zip(ep_chains, eps, strict=True):
        if sp.affinity_seconds:
            out += [f"  set {name}-aff {{", f"    type {nf.addr}", "    flags dynamic,timeout",
                    f"    timeout {sp.affinity_seconds}s", "  }"]
        out += [f"  chain {name} {{",
                f"    {l3} saddr {ep.ip} jump mark-for-masquerade"]  # hairpin
        if sp.affinity_seconds:
            out.append(f"    update @{name}-aff {{ {l3} saddr }}")
        out += [f"    meta l4proto {sp.protocol} dnat to {nf.target(ep.ip, ep.port)}", "  }"]
    return out


def _elements(items: list[str]) -> list[str]:
    return [f"    elements = {{ {', '.join(items)} }}"] if items else []


async def apply(script: str, *, check: bool = False, netns: str = "") -> None:
    """Load `script` with `nft -f -` (`check`: only `nft -c`, nothing changes); NftError
    with nft's message when it refuses."""
    cmd = ["nft", *(["-c"] if check else []), "-f", "-"]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate(script.encode())
    if proc.returncode != 0:
        raise NftError(err.decode(errors="replace").strip()[:2000])


async def delete(*, netns: str = "", table: str = TABLE) -> None:
    """Remove the tables (the agent stops routing services); nothing if they are absent."""
    await apply(delete_script(table), netns=netns)


def delete_script(table: str, families: tuple[str, ...] = ("ip", "ip6")) -> str:
    """Declare and delete `table` in each of `families` (nothing left, no error if absent)."""
    return "".join(f"table {f} {table} {{}}\ndelete table {f} {table}\n" for f in families)


def _version(ip: object) -> int:
    try:
        return ipaddress.ip_address(str(ip)).version
    except ValueError:
        return 0
