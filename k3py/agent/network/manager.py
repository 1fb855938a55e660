"""The node's networking, fed from metamanager (so it keeps working offline): this Node's pod
CIDR becomes its pods' podman bridge network (podnet.py), the other Nodes' pod CIDRs routes to
them (routes.py), and the Services and EndpointSlices the server sends every node become the
cluster DNS records (records.py, served by dns.py on the cluster DNS IP) and the node's
nftables service rules (proxy.py; conntrack.py cuts UDP flows to removed endpoints); the
NetworkPolicies with the namespaces' and pods' views become the policy rules (policy.py), loaded
in the same nft transaction; all rebuilt together a moment after any change.

The cluster DNS IP and domain come from the kube-system/kube-dns Service the server keeps
(its annotations follow `k3py server --cluster-dns/--cluster-domain`). The IP is added to the
node's loopback, so pods reach it through their gateway and the node itself does too; that
Service gets no service rules (there is nothing to forward to: every node answers itself).
Without root, nft or a free port 53 on that IP, the part that cannot run logs why and the rest
goes on.

Other nodes' pod CIDRs without a route (routes.py: not on a subnet of a link that is up; the
links are watched) are reached through the tunnel: the rules send TCP for them, and UDP for
Services whose endpoints are all there, to the tunnel proxy (tunnelproxy.py) on the cluster
DNS IP, which relays it over connect streams; this
node's side of such streams from other nodes is registered on the hub here too.

ServiceLB (servicelb.py): the LoadBalancer ports something on this node already listens on are
checked at each rebuild and every PORT_CHECK_SECONDS, kept out of the rules for this node's
own address, and reported through `report_ports_in_use` (the Node annotation the server
reads) whenever they change."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import shutil
from collections.abc import Awaitable, Callable

from k3py.agent.edgehub import EdgeHub
from k3py.agent.metamanager import MetaManager
from k3py.agent.network import policy, proxy
from k3py.agent.network.conntrack import Conntrack, stale_entries
from k3py.agent.network.dns import DNSServer, host_resolvers
from k3py.agent.network.podnet import PodNetwork
from k3py.agent.network.records import ClusterRecords
from k3py.agent.network.routes import RouteTable, pod_cidrs, tunnelled_cidrs, watch_links
from k3py.agent.network.servicelb import leave_out_taken, ports_in_use
from k3py.agent.network.tunnelproxy import TunnelProxy, serve_connect
from k3py.aio import wait_event
from k3py.api.servicelb import format_ports
from k3py.tunnel.protocol import NETWORK_POLICY_KINDS, POD_PEERS_KIND, STREAM_CONNECT

__all__ = ["NetworkManager", "DNS_DOMAIN_ANNOTATION", "NODE_LOCAL_ANNOTATION"]

log = logging.getLogger("k3py.network")

DNS_DOMAIN_ANNOTATION = "k3py.io/cluster-domain"  # server/controllers/service.py writes them
NODE_LOCAL_ANNOTATION = "k3py.io/node-local"
DEBOUNCE_SECONDS = 0.2
PORT_CHECK_SECONDS = 10.0
BRIDGE_NF_SYSCTL = "/proc/sys/net/bridge/bridge-nf-call-iptables"
BRIDGE_NF6_SYSCTL = "/proc/sys/net/bridge/bridge-nf-call-ip6tables"


class NetworkManager:
    def __init__(self, meta: MetaManager, *, node_name: str, cluster_id: str = "",
                 dns_port: int = 53, pod_network: PodNetwork | None = None, node_ip: str = "",
                 report_ports_in_use: Callable[[str], Awaitable[None]] | None = None,
                 hub: EdgeHub | None = None) -> None:
        self.meta = meta
        self.node_name = node_name
        self.podnet = pod_network  # None: pods stay on podman's default network
        self.routes = RouteTable()
        self.conntrack = Conntrack()
        self._ports: list[proxy.ServicePort] = []  # as the loaded rules route them
        self.node_ip = node_ip
        self.report_ports_in_use = report_ports_in_use
        self.ports_in_use: set[tuple[str, int]] = set()
        self._reported: str | None = None
        self._tunnelled: list[str] = []  # the pod CIDRs the rules send to the tunnel proxy
        self.table = f"{proxy.TABLE}-{cluster_id}" if cluster_id else proxy.TABLE
        self.policy_table = f"{policy.TABLE}-{cluster_id}" if cluster_id else policy.TABLE
        # br_netfilter checked on (pod-to-pod on the bridge filtered), for IPv6 too?
        self._bridge_nf = (False, False)
        self.dns_port = dns_port
        self.records = ClusterRecords()
        self.dns: tuple[str, str] | None = None  # (IP, domain) once kube-dns is known
        self._server: DNSServer | None = None
        self._task: asyncio.Task | None = None
        self._links_task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._changed = False  # cached objects changed since the last sync
        self._links_changed = False  # a link or address of the node did
        # traffic to nodes this one cannot route to goes through the server (hub: the tunnel)
        self.tunnel = TunnelProxy(hub) if hub is not None else None
        if hub is not None:
            hub.stream_handlers[STREAM_CONNECT] = lambda msg: serve_connect(
                hub, msg, lambda: self.podnet.cidr if self.podnet is not None else "",
                self._ingress_isolated)
        self._nft = shutil.which("nft") is not None
        self._rules_failed = False
        self._isolated: frozenset[str] | None = None  # until policies or pods change

    def _ingress_isolated(self, ip: str) -> bool:
        """Whether the relay must refuse connections to `ip` (computed once per change of the
        cached policies and pods, not per relayed connection)."""
        if self._isolated is None:
            self._isolated = policy.ingress_isolated(
                self.meta.objects("networkpolicies"),
                policy.pod_peers(self.meta.objects(POD_PEERS_KIND)))
        return ip in self._isolated

    def start(self) -> None:
        self.meta.listeners.append(self._on_change)
        self._task = asyncio.create_task(self._loop(), name="network")
        if self.podnet is not None:
            self._links_task = asyncio.create_task(watch_links(self._on_links), name="links")
        self._changed = True
        self._wake.set()

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.meta.listeners.remove(self._on_change)
        for task in (self._task, self._links_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.tunnel is not None:
            await self.tunnel.stop()
        if self._server is not None:
            await self._server.stop()
        if self._nft:
            with contextlib.suppress(proxy.NftError, OSError):
                await proxy.delete(table=self.table)
            with contextlib.suppress(proxy.NftError, OSError):
                await proxy.apply(policy.delete_script(self.policy_table))

    def _on_change(self, what: str) -> None:
        if what in ("sync", *NETWORK_POLICY_KINDS):
            self._isolated = None
        if what in ("services", "endpointslices", "nodes", "sync", *NETWORK_POLICY_KINDS):
            self._changed = True
            self._wake.set()

    def _on_links(self) -> None:
        self._links_changed = True
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            await wait_event(self._wake, PORT_CHECK_SECONDS)
            if self._wake.is_set():
                await asyncio.sleep(DEBOUNCE_SECONDS)  # a burst of changes: one rebuild
            self._wake.clear()
            changed, self._changed = self._changed, False
            if self._links_changed:  # pods' veths come and go too: rebuild only for subnets
                self._links_changed = False
                changed = await self._networks_changed() or changed
            if not changed and \
                    self._check_ports(self.meta.objects("services")) == self.ports_in_use:
                continue  # nothing changed; else a listener came or went: rebuild
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next change tries again
                log.exception("updating the node's service networking failed")

    async def sync(self) -> None:
        services = self.meta.objects("services")
        slices = self.meta.objects("endpointslices")
        dns = _dns_of(services)
        records = ClusterRecords(dns[1] if dns else "cluster.local")
        for svc in services:
            records.set_service(svc)
        for es in slices:
            records.set_endpointslice(es)
        self.records = records
        if dns is not None and dns != self.dns:
            await self._serve_dns(*dns)
        if self._server is not None:
            self._server.records = records
        nodes = self.meta.objects("nodes")
        me = next((n for n in nodes if (n.get("metadata") or {}).get("name") == self.node_name),
                  {})
        own = pod_cidrs(me, 4)[:1] + pod_cidrs(me, 6)[:1]  # the bridge's subnets
        tunnelled: list[str] = []
        if self.podnet is not None:
            await self.podnet.ensure(own, self._host_network)
            if self.podnet.active:
                await self._apply_routes(nodes)
                tunnelled = tunnelled_cidrs(nodes, self.node_name, self.routes.desired)
        routed = [s for s in services if not _node_local(s)]
        ports = proxy.service_ports(routed, slices, self.node_name)
        ports6 = proxy.service_ports(routed, slices, self.node_name, family=6)
        self.ports_in_use = self._check_ports(services)
        leave_out_taken(ports, self.node_ip, self.ports_in_use)
        proxy.mark_tunnelled(ports, tunnelled)
        # a CIDR leaving the tunnel (its route is back) stays the proxy's until the new rules
        # no longer send its connections there: one made in between would be refused
        leaving = [c for c in self._tunnelled if c not in tunnelled]
        tunnel_proxy = await self._tunnel_proxy(ports, tunnelled + leaving)
        await self._apply_rules(ports, sorted({c for n in nodes for c in pod_cidrs(n)}),
                                tunnelled, tunnel_proxy, await self._udp_proxies(),
                                ports6, sorted({c for n in nodes for c in pod_cidrs(n, 6)}))
        if leaving and self.tunnel is not None:
            self.tunnel.update(ports, tunnelled)
        self._tunnelled = tunnelled
        await self._report_ports()

    async def _tunnel_proxy(self, ports: list[proxy.ServicePort], tunnelled: list[str]) -> str:
        """The tunnel proxy's "IP:port" (on the cluster DNS IP, node-local), "" without one."""
        if self.tunnel is None:
            return ""
        self.tunnel.update(ports, tunnelled)
        if not tunnelled or self.dns is None:
            return self.tunnel.address  # (its guard stays in the rules while it listens)
        try:
            return await self.tunnel.listen(self.dns[0])
        except OSError as e:
            log.warning("the tunnel proxy cannot listen on %s (%s): nodes this one cannot "
                        "route to are not reached", self.dns[0], e.strerror or e)
            return ""

    async def _udp_proxies(self) -> dict[str, str]:
        """The tunnel proxy's socket for each UDP Service port with tunnelled endpoints."""
        if self.tunnel is None:
            return {}
        try:
            return await self.tunnel.serve_udp()
        except OSError as e:
            log.warning("the tunnel proxy cannot open its UDP sockets (%s): UDP Services on "
                        "nodes this one cannot route to are not reached", e.strerror or e)
            return {}

    async def _networks_changed(self) -> bool:
        try:
            return await self.routes.networks_changed()
        except (OSError, ValueError):
            return False

    def _check_ports(self, services: list[dict]) -> set[tuple[str, int]]:
        return ports_in_use(services, self.node_ip) if self.node_ip else set()

    async def _report_ports(self) -> None:
        text = format_ports(self.ports_in_use)
        if self.report_ports_in_use is not None and text != self._reported:
            if text:
                log.warning("LoadBalancer ports already in use on this node, not served "
                            "here: %s", text)
            await self.report_ports_in_use(text)
            self._reported = text

    def _host_network(self, uid: str) -> bool:
        return any(((p.get("spec") or {}).get("hostNetwork") and
                    (p.get("metadata") or {}).get("uid") == uid) for p in self.meta.pods())

    async def _apply_routes(self, nodes: list[dict]) -> None:
        try:
            await self.routes.sync(nodes, self.node_name)
        except (OSError, ValueError) as e:
            log.warning("updating the routes to other nodes' pods failed: %s", e)

    async def pod_network(self) -> str:
        """The podman network a new pod joins ("" = podman's default), for the runtime."""
        return await self.podnet.pod_network() if self.podnet is not None else ""

    async def _serve_dns(self, ip: str, domain: str) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None
        self.dns = (ip, domain)
        await _add_loopback_address(ip)
        server = DNSServer(self.records, upstreams=lambda: host_resolvers(exclude=(ip,)))
        try:
            await server.start(ip, self.dns_port)
        except OSError as e:
            # (uvloop's UDP bind error carries no errno)
            hint = "; another k3py cluster on this host may answer there: give each its " \
                "own --cluster-dns and --service-cidr" \
                if e.errno in (errno.EADDRINUSE, None) else ""
            log.warning("cluster DNS cannot listen on %s:%s (%s); pods fall back to the "
                        "host's resolvers%s", ip, self.dns_port, e.strerror or repr(e), hint)
            return
        self._server = server
        log.info("cluster DNS for %s answering on %s:%s", domain, ip, self.dns_port)

    async def _apply_rules(self, ports: list[proxy.ServicePort], cidrs: list[str],
                           tunnelled: list[str], tunnel_proxy: str,
                           udp_proxies: dict[str, str],
                           ports6: list[proxy.ServicePort], cidrs6: list[str]) -> None:
        if not self._nft:
            if not self._rules_failed:
                log.warning("nft is not installed: Services are not routed on this node")
                self._rules_failed = True
            return
        own = self.podnet.cidr if self.podnet is not None else ""
        own6 = next((c for c in (self.podnet.cidrs if self.podnet is not None else [])
                     if ":" in c), "")
        policies = self.meta.objects("networkpolicies")
        if policies and self._bridge_nf != (True, bool(own6)):
            self._bridge_nf = (await _bridge_netfilter(BRIDGE_NF_SYSCTL) and (
                not own6 or await _bridge_netfilter(BRIDGE_NF6_SYSCTL)), bool(own6))
        services = proxy.build_ruleset(
            ports, table=self.table, pod_cidrs=tuple(cidrs) if own else (),
            own_pod_cidr=own, masquerade_all=not own, tunnel_cidrs=tuple(tunnelled),
            tunnel_proxy=tunnel_proxy, udp_proxies=udp_proxies)
        # the IPv6 table only once there is IPv6 to route (else declared and deleted: none)
        services += proxy.build_ruleset(
            ports6, table=self.table, pod_cidrs=tuple(cidrs6) if own6 else (),
            own_pod_cidr=own6, masquerade_all=not own6, family=6) \
            if ports6 or own6 else proxy.delete_script(self.table, ("ip6",))
        try:
            await self._apply_with_policies(services, policies, bool(own6))
            stale, self._ports = stale_entries(self._ports, ports + ports6), ports + ports6
            await self.conntrack.flush(stale)
            if self._rules_failed:
                log.info("service rules loaded again (%d service ports)", len(ports))
            self._rules_failed = False
        except (proxy.NftError, OSError) as e:
            if not self._rules_failed:
                log.warning("loading the service rules failed: %s", e)
            self._rules_failed = True

    async def _apply_with_policies(self, services: str, policies: list[dict],
                                   ipv6: bool) -> None:
        """The service and policy rules in one transaction; if nft refuses the policy part,
        the service rules alone, the policy table keeping its last loaded rules. `ipv6`: the
        node's pods have IPv6 addresses, filtered in the policies' ip6 table too."""
        namespaces = self.meta.objects("namespaces")
        views = self.meta.objects(POD_PEERS_KIND)
        rules = policy.build_ruleset(policies, namespaces, policy.pod_peers(views),
                                     node_name=self.node_name, table=self.policy_table)
        rules += policy.build_ruleset(policies, namespaces, policy.pod_peers(views, 6),
                                      node_name=self.node_name, table=self.policy_table,
                                      family=6) if ipv6 else \
            policy.delete_script(self.policy_table, ("ip6",))
        try:
            await proxy.apply(services + rules)
        except proxy.NftError as e:
            await proxy.apply(services)  # (refused too: the service rules were at fault)
            log.error("the NetworkPolicy rules were refused, the previous ones stay: %s", e)

    def pod_dns(self) -> tuple[str, str] | None:
        """(cluster DNS IP, domain) for pods with dnsPolicy ClusterFirst, once served."""
        return self.dns if self._server is not None else None


def _node_local(svc: dict) -> bool:
    return ((svc.get("metadata") or {}).get("annotations") or {}).get(NODE_LOCAL_ANNOTATION) \
        == "true"


def _dns_of(services: list[dict]) -> tuple[str, str] | None:
    for svc in services:
        md = svc.get("metadata") or {}
        if md.get("namespace") == "kube-system" and md.get("name") == "kube-dns":
            ip = (svc.get("spec") or {}).get("clusterIP") or ""
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(ip)
                domain = (md.get("annotations") or {}).get(DNS_DOMAIN_ANNOTATION) or \
                    "cluster.local"
                return ip, domain
    return None


async def _bridge_netfilter(sysctl: str) -> bool:
    """Make bridged IPv4 (IPv6) traffic pass the IP hooks (br_netfilter,
    bridge-nf-call-iptables=1 or -ip6tables=1: `sysctl`) so that the policy rules see
    pod-to-pod traffic on this node's bridge (policy.py says why); True once on. What fails
    is logged: policies then hold only across nodes."""
    if not os.path.exists(sysctl) and shutil.which("modprobe") is not None:
        proc = await asyncio.create_subprocess_exec(
            "modprobe", "br_netfilter", stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            log.debug("modprobe br_netfilter: %s", err.decode(errors="replace").strip())
    try:
        with open(sysctl, "r+") as f:
            if f.read().strip() != "1":
                f.seek(0)
                f.write("1")
        return True
    except OSError as e:
        log.warning("cannot turn on %s (%s): NetworkPolicies do not apply between pods of "
                    "the same node", sysctl, e.strerror or e)
        return False


async def _add_loopback_address(ip: str) -> None:
    """The cluster DNS IP on lo (idempotent); failure is left to the bind to report."""
    if shutil.which("ip") is None:
        return
    proc = await asyncio.create_subprocess_exec(
        "ip", "addr", "replace", f"{ip}/32", "dev", "lo",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        log.debug("adding %s to lo: %s", ip, err.decode(errors="replace").strip())
