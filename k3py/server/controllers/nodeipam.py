"""NodeIPAMController: gives each Node a pod CIDR of its own from the cluster CIDR, as
upstream's node-ipam-controller (range allocator) does for kube-controller-manager's
`--allocate-node-cidrs`.

A Node without `spec.podCIDR` gets the next free subnet of `--cluster-cidr` (one per address
family when the cluster CIDR is dual-stack: "10.42.0.0/16,fd42::/56"), of size
`--node-cidr-mask-size` for IPv4 (K3s default: /24 out of 10.42.0.0/16) and /64 for IPv6,
written to `spec.podCIDR` and `spec.podCIDRs`. A CIDR stays with its Node across server
restarts (it is in the Node object; the allocator marks what the stored Nodes hold before it
hands out anything) and goes back to the pool when the Node is deleted. When the range is
full the Node gets a Warning Event CIDRNotAvailable and is retried later.

The range and size are `k3py server --cluster-cidr/--node-cidr-mask-size` (ServerConfig;
`ctx.extra` "cluster_cidr" and "node_cidr_mask_size" override them in tests). A Node holding a
CIDR outside the range (the server restarted with another --cluster-cidr) keeps it, with a
warning: its pods are already on it; a new Node gets one from the new range."""

from __future__ import annotations

import ipaddress
import logging

from k3py.api.dualstack import Network, parse_cidrs
from k3py.server.controllers.base import Controller, ControllerContext

__all__ = ["NodeIPAMController", "CIDRAllocator", "parse_cluster_cidrs"]

log = logging.getLogger("k3py.controllers.nodeipam")

IPV6_MASK = 64
RETRY_FULL_SECONDS = 30.0

def parse_cluster_cidrs(value: str, mask_v4: int, mask_v6: int = IPV6_MASK) -> list[Network]:
    """The cluster CIDR list ("10.42.0.0/16" or "10.42.0.0/16,fd42::/56"); ValueError with a
    message fit for the user when it is not one network per family, each larger than the
    per-node size."""
    nets = parse_cidrs(value)
    for net in nets:
        want = mask_v4 if net.version == 4 else mask_v6
        if want < net.prefixlen or want > net.max_prefixlen:
            raise ValueError(f"cluster CIDR {net} cannot hold node subnets of /{want}: the "
                             f"node mask must be between /{net.prefixlen} and "
                             f"/{net.max_prefixlen}")
    return nets


class CIDRAllocator:
    """Subnets of one cluster network, by index: subnet i is the i-th /mask of the network."""

    def __init__(self, network: Network, mask: int) -> None:
        self.network = network
        self.mask = mask
        self.size = 1 << (mask - network.prefixlen)
        self._step = 1 << (network.max_prefixlen - mask)
        self._base = int(network.network_address)
        self.used: set[int] = set()
        self._next = 0

    def index_of(self, cidr: str) -> int | None:
        """The subnet index of `cidr`, None if it is not one of this network's subnets."""
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return None
        if net.version != self.network.version or net.prefixlen != self.mask or \
                not net.subnet_of(self.network):  # type: ignore[arg-type]
            return None
        return (int(net.network_address) - self._base) // self._step

    def occupy(self, cidr: str) -> bool:
        """Mark a subnet a stored Node holds; False if it is not ours."""
        i = self.index_of(cidr)
        if i is None:
            return False
        self.used.add(i)
        return True

    def release(self, cidr: str) -> None:
        i = self.index_of(cidr)
        if i is not None:
            self.used.discard(i)

    def allocate(self) -> str | None:
        """The next free subnet after the last one handed out (so a freed subnet is not
        reused at once), None when all are taken."""
        for k in range(self.size):
            i = (self._next + k) % self.size
            if i not in self.used:
                self.used.add(i)
                self._next = (i + 1) % self.size
                addr = ipaddress.ip_address(self._base + i * self._step)
                return f"{addr}/{self.mask}"
        return None


def _pod_cidrs(node: dict) -> list[str]:
    spec = node.get("spec") or {}
    cidrs = [c for c in spec.get("podCIDRs") or [] if isinstance(c, str)]
    if not cidrs and isinstance(spec.get("podCIDR"), str) and spec["podCIDR"]:
        cidrs = [spec["podCIDR"]]
    return cidrs


class NodeIPAMController(Controller):
    name = "node-ipam-controller"
    workers = 1  # allocations are made one at a time, in the order Nodes appear

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        mask = ctx.extra.get("node_cidr_mask_size", ctx.config.node_cidr_mask_size)
        self.allocators = [CIDRAllocator(n, mask if n.version == 4 else IPV6_MASK)
                           for n in parse_cluster_cidrs(
                               ctx.extra.get("cluster_cidr", ctx.config.cluster_cidr), mask)]
        self.node_res = ctx.resource("", "nodes")
        self._held: dict[str, list[str]] = {}  # node name -> the CIDRs it holds
        # Nodes told the range is full: retried on their timer or when a CIDR is freed, not at
        # each of their status updates (at 1,000 nodes in a /16 of /24s that was an Event
        # write per heartbeat)
        self._full: set[str] = set()

    def setup(self) -> None:
        self.nodes = self.ctx.informers.informer("", "nodes")
        self.nodes.add_handler(self._on_node)

    def _on_node(self, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old or {}
        name = (obj.get("metadata") or {}).get("name") or ""
        if etype == "DELETED":
            self._full.discard(name)
            freed = self._held.pop(name, [])
            for cidr in freed:
                for a in self.allocators:
                    a.release(cidr)
            if freed:  # a Node waiting for a CIDR (the range was full) gets it now
                for waiting in self.nodes.list():
                    if not _pod_cidrs(waiting):
                        self.enqueue(waiting["metadata"]["name"])
            return
        cidrs = _pod_cidrs(obj)
        if cidrs:
            self._full.discard(name)
            self._hold(name, cidrs)
        elif name not in self._full:
            self.enqueue(name)

    def _hold(self, name: str, cidrs: list[str]) -> None:
        if self._held.get(name) == cidrs:
            return
        for cidr in cidrs:
            if not any(a.occupy(cidr) for a in self.allocators):
                log.warning("node %s holds pod CIDR %s, outside the cluster CIDR", name, cidr)
        self._held[name] = cidrs

    async def reconcile(self, key: str) -> None:
        await self.nodes.synced.wait()  # every stored allocation is marked before a new one
        node = self.nodes.get(None, key)
        if node is None or _pod_cidrs(node):
            return
        picked = [a.allocate() for a in self.allocators]
        if any(c is None for c in picked):
            for a, c in zip(self.allocators, picked, strict=True):
                if c is not None:
                    a.release(c)
            if key not in self._full:
                self._full.add(key)
                nets = ",".join(str(a.network) for a in self.allocators)
                log.warning("no pod CIDR left in %s for node %s", nets, key)
                await self.ctx.recorder.record(
                    node, "Warning", "CIDRNotAvailable",
                    f"Node {key} status is now: CIDRNotAvailable (no "
                    f"/{self.allocators[0].mask} left in {nets})", component="cidrAllocator")
            self.enqueue(key, after=RETRY_FULL_SECONDS)
            return
        cidrs = [c for c in picked if c is not None]
        self._held[key] = cidrs

        def assign(cur: dict) -> dict | None:
            if _pod_cidrs(cur):
                return None  # someone set it meanwhile: theirs stands
            spec = cur.setdefault("spec", {})
            spec["podCIDR"] = cidrs[0]
            spec["podCIDRs"] = cidrs
            return cur
        try:
            out = await self.registry.update_with(self.node_res, None, key, assign)
        except BaseException:
            self._release(key, cidrs)
            raise
        if out is None or _pod_cidrs(out) != cidrs:
            self._release(key, cidrs)
            if out is not None:
                self._hold(key, _pod_cidrs(out))
            return
        log.info("node %s: pod CIDR %s", key, ",".join(cidrs))

    def _release(self, name: str, cidrs: list[str]) -> None:
        if self._held.get(name) == cidrs:
            del self._held[name]
        for cidr in cidrs:
            for a in self.allocators:
                a.release(cidr)
