"""Service ClusterIP and NodePort allocation as admission steps of one server (a create
mutator, an update preparer keeping allocated values, a delete hook), a repair loop, and the
`kubernetes` Service itself.

Built and added to the server's AdmissionChain by k3py.server.bootstrap; state is rebuilt
from the stored Services at start."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import time
from collections.abc import Iterable

from k3py.api import dualstack, errors
from k3py.api import validation as v
from k3py.api.resources import Resource
from k3py.server.admission import AdmissionChain
from k3py.server.registry import Registry

__all__ = ["ServiceAllocator", "ensure_kubernetes_service", "ensure_kubernetes_endpoints",
           "ensure_dns_service", "DNS_DOMAIN_ANNOTATION", "NODE_LOCAL_ANNOTATION",
           "IPAllocator", "PortAllocator"]

log = logging.getLogger("k3py.services")

_NODE_PORT_TYPES = ("NodePort", "LoadBalancer")
_PENDING_GRACE = 30.0  # an allocation not yet visible in the store is kept this long


def _is_service(res: Resource) -> bool:
    return res.group == "" and res.kind == "Service"


class _Bitmap:
    """Allocated members of a range, with in-flight allocations remembered for repair."""

    def __init__(self) -> None:
        self.used: set[int] = set()
        self.pending: dict[int, float] = {}

    def take(self, n: int) -> bool:
        if n in self.used:
            return False
        self.used.add(n)
        self.pending[n] = time.monotonic()
        return True

    def release(self, n: int) -> None:
        self.used.discard(n)
        self.pending.pop(n, None)

    def repair(self, in_store: set[int]) -> None:
        now = time.monotonic()
        keep = {n for n, t in self.pending.items() if now - t < _PENDING_GRACE}
        self.pending = {n: t for n, t in self.pending.items() if n in keep and n not in in_store}
        self.used = in_store | keep


class IPAllocator(_Bitmap):
    def __init__(self, cidr: str) -> None:
        super().__init__()
        self.network = ipaddress.ip_network(cidr, strict=False)
        self.first = int(self.network.network_address) + 1  # reserved for `kubernetes`
        self.last = int(self.network.broadcast_address) - (
            1 if self.network.version == 4 else 0)

    def contains(self, ip: str) -> bool:
        try:
            n = int(ipaddress.ip_address(ip))
        except ValueError:
            return False
        return self.first <= n <= self.last

    def allocate(self, ip: str | None = None) -> str:
        if ip:
            if not self.contains(ip):
                raise ValueError(f"failed to allocate IP {ip}: the provided IP ({ip}) is not "
                                 f"in the valid range. The range of valid IPs is {self.network}")
            if not self.take(int(ipaddress.ip_address(ip))):
                raise ValueError(f"failed to allocate IP {ip}: provided IP is already allocated")
            return ip
        lo, hi = self.first + 1, self.last
        for _ in range(64):
            n = random.randint(lo, hi)
            if self.take(n):
                return str(ipaddress.ip_address(n))
        for n in range(lo, hi + 1):
            if self.take(n):
                return str(ipaddress.ip_address(n))
        raise ValueError("failed to allocate a serviceIP: range is full")

    def release_ip(self, ip: str) -> None:
        if self.contains(ip):
            self.release(int(ipaddress.ip_address(ip)))


class PortAllocator(_Bitmap):
    def __init__(self, port_range: str) -> None:
        super().__init__()
        lo, _, hi = port_range.partition("-")
        self.lo, self.hi = int(lo), int(hi or lo)

    def allocate(self, port: int | None = None) -> int:
        if port:
            if not self.lo <= port <= self.hi:
                raise ValueError(f"provided port is not in the valid range. The range of valid "
                                 f"ports is {self.lo}-{self.hi}")
            if not self.take(port):
                raise ValueError("provided port is already allocated")
            return port
        for _ in range(64):
            n = random.randint(self.lo, self.hi)
            if self.take(n):
                return n
        for n in range(self.lo, self.hi + 1):
            if self.take(n):
                return n
        raise ValueError("range is full")


def _cluster_ips(spec: dict) -> list[str]:
    ips = list(spec.get("clusterIPs") or [])
    if not ips and spec.get("clusterIP"):
        ips = [spec["clusterIP"]]
    return [ip for ip in ips if ip and ip != "None"]


def _node_ports(spec: dict) -> list[int]:
    return [p["nodePort"] for p in spec.get("ports") or []
            if isinstance(p, dict) and isinstance(p.get("nodePort"), int) and p["nodePort"]]


class ServiceAllocator:
    """ClusterIPs from the service CIDR and node ports from the node-port range."""

    def __init__(self, registry: Registry, service_cidr: str, node_port_range: str) -> None:
        self.registry = registry
        # one allocator per family of --service-cidr, the primary first
        self.families = {dualstack.family_of(str(n.network_address)): IPAllocator(str(n))
                         for n in dualstack.parse_cidrs(service_cidr)}
        self.ips = next(iter(self.families.values()))
        self.ports = PortAllocator(node_port_range)
        self._repair_task: asyncio.Task | None = None

    def install(self, chain: AdmissionChain) -> None:
        """Add this allocator's steps to a server's admission chain."""
        chain.add_preparer("ServiceAllocatedValues", self.prepare_update)
        chain.add_mutator("ServiceAllocation", self.on_create)
        chain.add_delete_hook("ServiceRelease", self.on_delete)

    @property
    def kubernetes_ip(self) -> str:
        return str(ipaddress.ip_address(self.ips.first))

    # ------------------------------------------------------------ state

    async def rebuild(self, repair_interval: float = 60.0) -> None:
        """Load allocations from the stored Services and start the repair loop."""
        await self.repair()
        if self._repair_task is None and repair_interval > 0:
            self._repair_task = asyncio.create_task(self._repair_loop(repair_interval),
                                                    name="service-allocator-repair")

    async def repair(self) -> None:
        res = self.registry.resources.get("", "v1", "services")
        items = (await self.registry.list(res, None))["items"]
        ips: dict[str, set[int]] = {fam: set() for fam in self.families}
        ports: set[int] = set()
        for svc in items:
            spec = svc.get("spec") or {}
            for ip in _cluster_ips(spec):
                fam = dualstack.family_of(ip)
                if fam in self.families and self.families[fam].contains(ip):
                    ips[fam].add(int(ipaddress.ip_address(ip)))
            ports.update(_node_ports(spec))
        for fam, alloc in self.families.items():
            alloc.repair(ips[fam])
        self.ports.repair(ports)

    async def _repair_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.repair()
            except Exception:  # noqa: BLE001
                log.exception("service allocation repair failed")

    async def stop(self) -> None:
        if self._repair_task:
            self._repair_task.cancel()
            with contextlib.suppress(BaseException):
                await self._repair_task

    # ------------------------------------------------------------ hooks

    def on_create(self, res: Resource, obj: dict) -> None:
        if not _is_service(res):
            return
        self.allocate(obj, None)

    def prepare_update(self, res: Resource, obj: dict, old: dict | None,
                       subresource: str) -> None:
        """Updates keep allocated values a client left out and allocate what a type change
        needs (upstream's patchAllocatedValues + dropTypeDependentFields)."""
        if old is None or subresource or not _is_service(res) or not isinstance(obj, dict):
            return
        _keep_allocated_values(obj, old)
        self.allocate(obj, old)
        kept = set(_cluster_ips(obj.get("spec") or {}))
        # a released secondary IP (or all of them, on a change to ExternalName) is free at
        # once, as upstream frees it when the update commits
        self._release_ips(ip for ip in _cluster_ips(old.get("spec") or {}) if ip not in kept)

    def _release_ips(self, ips: Iterable[str]) -> None:
        for ip in ips:
            alloc = self.families.get(dualstack.family_of(ip))
            if alloc is not None:
                alloc.release_ip(ip)

    def on_delete(self, res: Resource, obj: dict) -> None:
        if not _is_service(res):
            return
        spec = obj.get("spec") or {}
        self._release_ips(_cluster_ips(spec))
        for port in _node_ports(spec):
            self.ports.release(port)

    def allocate(self, obj: dict, old: dict | None) -> None:
        """Fill ipFamilies, ipFamilyPolicy, clusterIP(s) and node ports of `obj`; 422 Invalid
        on a request the cluster cannot meet or a taken value."""
        spec = obj.setdefault("spec", {})
        name = (obj.get("metadata") or {}).get("name") or ""
        stype = spec.get("type") or "ClusterIP"
        old_spec = (old or {}).get("spec") or {}
        taken: list[tuple[IPAllocator | PortAllocator, int]] = []  # undone if a step fails
        try:
            if stype != "ExternalName":
                self._allocate_ips(name, spec, old_spec if old is not None else None, taken)
            if stype in _NODE_PORT_TYPES:
                old_ports = set(_node_ports(old_spec))
                for i, p in enumerate(spec.get("ports") or []):
                    if not isinstance(p, dict):
                        continue
                    want_port = p.get("nodePort") or None
                    if want_port in old_ports:
                        continue
                    try:
                        p["nodePort"] = self.ports.allocate(want_port)
                    except ValueError as e:
                        raise errors.invalid("", "Service", name, [errors.field_cause(
                            f"spec.ports[{i}].nodePort",
                            f"Invalid value: {want_port}: {e}")]) from None
                    taken.append((self.ports, p["nodePort"]))
        except errors.StatusError:
            for alloc, n in taken:
                alloc.release(n)
            raise

    def _allocate_ips(self, name: str, spec: dict, old_spec: dict | None,
                      taken: list[tuple[IPAllocator | PortAllocator, int]]) -> None:
        """Upstream's initIPFamilyFields then allocClusterIPs: families from the policy and
        the cluster's service CIDRs, one IP per family (requested or free)."""
        old_type = (old_spec or {}).get("type") or "ClusterIP"
        from_external = old_spec is not None and old_type == "ExternalName"
        dualstack.normalize_cluster_ips(spec, None if from_external else old_spec)
        causes = dualstack.init_ip_families(spec, None if from_external else old_spec,
                                            list(self.families))
        if causes:
            raise errors.invalid("", "Service", name, causes)
        if spec.get("clusterIP") == "None":
            return
        have = [] if old_spec is None or from_external else _cluster_ips(old_spec)
        ips = list(spec.get("clusterIPs") or [])
        for i, fam in enumerate(spec.get("ipFamilies") or []):
            want = ips[i] if i < len(ips) else ""
            if want and want in have:
                continue
            try:
                ip = self.families[fam].allocate(want or None)
            except ValueError as e:
                raise errors.invalid("", "Service", name, [v.invalid_value(
                    "spec.clusterIPs", ips or [""], str(e))]) from None
            taken.append((self.families[fam], int(ipaddress.ip_address(ip))))
            if i < len(ips):
                ips[i] = ip
            else:
                ips.append(ip)
        ips = ips[:len(spec.get("ipFamilies") or [])]
        spec["clusterIPs"] = ips
        spec["clusterIP"] = ips[0]


def _keep_allocated_values(obj: dict, old: dict) -> None:
    spec = obj.setdefault("spec", {})
    old_spec = old.get("spec") or {}
    stype = spec.get("type") or old_spec.get("type") or "ClusterIP"
    old_type = old_spec.get("type") or "ClusterIP"
    if stype != "ExternalName" and old_type != "ExternalName":
        if not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]
        if not spec.get("clusterIPs") and old_spec.get("clusterIPs"):
            spec["clusterIPs"] = list(old_spec["clusterIPs"])
    elif stype == "ExternalName" and old_type != "ExternalName":
        # what the Service had as another type goes; what the client changed stays, for
        # validation to refuse (upstream's dropTypeDependentFields)
        if _cluster_ips(spec) == _cluster_ips(old_spec):
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        for f in ("ipFamilyPolicy", "ipFamilies"):
            if spec.get(f) == old_spec.get(f):
                spec.pop(f, None)
    old_np = {(p.get("port"), p.get("protocol") or "TCP"): p.get("nodePort")
              for p in old_spec.get("ports") or [] if isinstance(p, dict)}
    if stype in _NODE_PORT_TYPES:
        for p in spec.get("ports") or []:
            if isinstance(p, dict) and not p.get("nodePort"):
                prev = old_np.get((p.get("port"), p.get("protocol") or "TCP"))
                if prev:
                    p["nodePort"] = prev
    elif old_type in _NODE_PORT_TYPES:
        for p in spec.get("ports") or []:
            if isinstance(p, dict) and p.get("nodePort") and \
                    old_np.get((p.get("port"), p.get("protocol") or "TCP")) == p["nodePort"]:
                p.pop("nodePort")  # released lazily by the repair loop


async def ensure_kubernetes_service(registry: Registry, cluster_ip: str, advertise_ip: str,
                                    port: int, *, endpoints: bool = True) -> dict:
    """default/kubernetes: ClusterIP = first IP of the service CIDR (the allocator's
    `kubernetes_ip`), port 443 -> API port; its endpoints = this server, unless `endpoints`
    is False (several servers: apiendpoints.py writes them)."""
    res = registry.resources.get("", "v1", "services")
    ports = [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": int(port)}]
    svc = await registry.try_get(res, "default", "kubernetes")
    if svc is None:
        try:
            svc = await registry.create(res, "default", {
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default",
                             "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "ports": ports,
                         "sessionAffinity": "None"}})
        except errors.StatusError as e:
            if e.code != 409:
                raise
            svc = await registry.get(res, "default", "kubernetes")

    def fix(cur: dict) -> dict | None:
        have = [{k: p.get(k) for k in ("name", "port", "protocol", "targetPort")}
                for p in (cur.get("spec") or {}).get("ports") or []]
        if have == ports:
            return None
        cur["spec"]["ports"] = ports
        return cur
    out = await registry.update_with(res, "default", "kubernetes", fix) or svc
    if endpoints:
        await ensure_kubernetes_endpoints(registry, [advertise_ip], port)
    return out


DNS_DOMAIN_ANNOTATION = "k3py.io/cluster-domain"
NODE_LOCAL_ANNOTATION = "k3py.io/node-local"


async def ensure_dns_service(registry: Registry, cluster_dns: str, domain: str) -> None:
    """kube-system/kube-dns at the cluster DNS IP, as tools that look for it expect. Every
    agent answers that IP itself (agent/network: node-local, so DNS works offline): the
    Service has no endpoints and the node's service rules leave it alone. Its annotations
    tell agents the DNS IP and the cluster domain (they follow the server's flags)."""
    res = registry.resources.get("", "v1", "services")
    want = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system",
                         "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS",
                                    "kubernetes.io/cluster-service": "true"},
                         "annotations": {DNS_DOMAIN_ANNOTATION: domain,
                                         NODE_LOCAL_ANNOTATION: "true"}},
            "spec": {"type": "ClusterIP", "clusterIP": cluster_dns, "clusterIPs": [cluster_dns],
                     "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                               {"name": "dns-tcp", "port": 53, "protocol": "TCP",
                                "targetPort": 53}]}}
    cur = await registry.try_get(res, "kube-system", "kube-dns")
    if cur is not None and (cur.get("spec") or {}).get("clusterIP") != cluster_dns:
        await registry.delete(res, "kube-system", "kube-dns")  # --cluster-dns changed
        cur = None
    if cur is None:
        try:
            await registry.create(res, "kube-system", want)
        except errors.StatusError as e:
            if e.code != 409:
                raise
        return

    def fix(obj: dict) -> dict | None:
        ann = obj["metadata"].setdefault("annotations", {})
        if ann.get(DNS_DOMAIN_ANNOTATION) == domain and ann.get(NODE_LOCAL_ANNOTATION):
            return None
        ann.update(want["metadata"]["annotations"])
        return obj
    await registry.update_with(res, "kube-system", "kube-dns", fix)


async def _put(registry: Registry, res: Resource | None, obj: dict, fields: tuple[str, ...]
               ) -> None:
    """Create `obj` in default, or make its `fields` equal to ours."""
    if res is None:
        return
    name = obj["metadata"]["name"]

    def fix(cur: dict) -> dict | None:
        same = all(cur.get(f) == obj.get(f) for f in fields) and \
            (cur["metadata"].get("labels") or {}) == obj["metadata"].get("labels", {})
        if same:
            return None
        for f in fields:
            cur[f] = obj[f]
        cur["metadata"]["labels"] = obj["metadata"].get("labels", {})
        return cur
    if await registry.update_with(res, "default", name, fix) is not None:
        return
    if await registry.try_get(res, "default", name) is None:
        try:
            await registry.create(res, "default", obj)
        except errors.StatusError as e:
            if e.code != 409:
                raise


async def ensure_kubernetes_endpoints(registry: Registry, addresses: list[str],
                                      port: int) -> None:
    """Endpoints and EndpointSlice of default/kubernetes point at the API servers (every
    server listens on the same port, as upstream assumes), written by the servers themselves
    as upstream's endpoint reconciler does (the Service has no selector)."""
    family = "IPv6" if ":" in addresses[0] else "IPv4"
    ports = [{"name": "https", "port": int(port), "protocol": "TCP"}]
    await _put(registry, registry.resources.get("", "v1", "endpoints"), {
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip} for ip in addresses], "ports": ports}]},
        ("subsets",))
    await _put(registry, registry.resources.get("discovery.k8s.io", "v1", "endpointslices"), {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": family,
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in addresses],
        "ports": ports}, ("addressType", "endpoints", "ports"))
