"""The node's pod network: a podman bridge network on this Node's pod CIDR (`spec.podCIDR`,
given by the server's node IPAM controller), made through podman's own network API
(runtime/libpod.py), so that pod IPs are unique in the cluster and other nodes can route to
them (routes.py). NetworkManager (manager.py) calls `ensure` with the CIDR of each sync; the
runtime asks `pod_network` which network a new pod joins.

The network is `k3py-<cluster id>-<node>` (one per cluster and node, as podman keeps network
definitions host-wide), labelled with the cluster. A pod created before the CIDR was known
waits for it briefly, then goes on podman's default network (logged); once the network
exists (or its CIDR changed), the pods on another network are removed once, and the pod
syncer recreates them on it. A stale k3py network of a gone cluster holding the same subnet
(nothing attached) is removed; one in use (another cluster on this host with the same
--cluster-cidr) makes this node stay on podman's default, with one error line naming it.

Dual-stack: a Node with an IPv4 and an IPv6 pod CIDR gets one network with both subnets
(podman's IPv6 on), so each pod has an address of each family."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable, Collection
from typing import Protocol

from k3py.aio import wait_event

__all__ = ["PodNetwork", "PodNetworkTaken", "network_name", "gateway_of", "POD_CIDR_WAIT",
           "NETWORK_LABEL"]

log = logging.getLogger("k3py.network")

POD_CIDR_WAIT = 10.0  # seconds a new pod waits for the node's pod CIDR at most, once
NETWORK_LABEL = "io.k3py.network"  # "pods": a k3py pod network (the cluster is LABEL_CLUSTER)


class NetworkAPI(Protocol):
    """What of the libpod API (runtime/libpod.LibpodAPI) the pod network uses."""

    async def network_inspect(self, name: str) -> dict | None: ...
    async def network_list(self) -> list[dict]: ...
    async def network_create(self, name: str, subnets: list[tuple[str, str]],
                             labels: dict[str, str]) -> None: ...
    async def network_remove(self, name: str) -> None: ...
    async def network_users(self, name: str) -> list[dict]: ...
    async def list_pods(self, claim: Collection[str] = ()) -> dict[str, dict]: ...
    async def remove_pod(self, name_or_id: str, grace: int = 30) -> None: ...


class PodNetworkTaken(Exception):
    """Another cluster's pod network in use on this host has the node's pod CIDR."""


def network_name(cluster_id: str, node_name: str) -> str:
    return f"k3py-{cluster_id}-{node_name}" if cluster_id else f"k3py-{node_name}"


def gateway_of(cidr: str) -> str:
    """The bridge's address: the CIDR's first host address (as flannel's cni0)."""
    return str(ipaddress.ip_network(cidr, strict=False).network_address + 1)


class PodNetwork:
    def __init__(self, api: NetworkAPI, *, name: str, labels: dict[str, str],
                 wait: float = POD_CIDR_WAIT) -> None:
        self.api = api
        self.name = name
        self.labels = {**labels, NETWORK_LABEL: "pods"}
        self.wait = wait
        # the pod CIDRs of the network pods join now ([] = podman's default), IPv4 first
        self.cidrs: list[str] = []
        self._refused: list[str] = []  # CIDRs the network could not be made on (not retried)
        self._decided = asyncio.Event()  # the CIDR came, or waiting for it ended

    @property
    def cidr(self) -> str:
        """The network's IPv4 pod CIDR ("" = none)."""
        return next((c for c in self.cidrs if ":" not in c), "")

    @property
    def active(self) -> str:
        return self.name if self.cidrs else ""

    async def pod_network(self) -> str:
        """The network a new pod joins: the node's, or "" (podman's default) when the pod
        CIDR did not come within `wait` seconds of the first ask."""
        if not self._decided.is_set():
            if not await wait_event(self._decided, self.wait):
                self._decided.set()
                log.warning("this Node has no spec.podCIDR after %.0fs: pods go on podman's "
                            "default network until it has one (pod IPs may then collide "
                            "with other nodes')", self.wait)
        return self.active

    async def ensure(self, cidrs: list[str], host_network: Callable[[str], bool]) -> bool:
        """Make the network match the node's pod CIDRs `cidrs` ([]: none yet; at most one
        per family); True when pods now go on another network (those elsewhere were removed
        for the syncer to recreate). `host_network(uid)`: the pod uses the host's network
        (left alone)."""
        if not cidrs or cidrs in (self.cidrs, self._refused):
            return False
        shown = ",".join(cidrs)
        try:
            await self._make(cidrs)
        except Exception as e:  # noqa: BLE001 - the node keeps podman's default network
            log.error("cannot make the pod network %s on %s: %s; pods stay on podman's "
                      "default network", self.name, shown, e)
            self._refused = cidrs
            self._decided.set()
            return False
        self.cidrs = cidrs
        self._decided.set()
        log.info("pods go on network %s (%s, gateway %s)", self.name, shown,
                 ",".join(gateway_of(c) for c in cidrs))
        await self._recreate_elsewhere(host_network)
        return True

    async def _make(self, cidrs: list[str]) -> None:
        found = await self.api.network_inspect(self.name)
        shown = ",".join(cidrs)
        if found is not None:
            if sorted(_subnets(found)) == sorted(cidrs):
                return
            log.info("pod network %s has subnet %s, the node's pod CIDR is now %s: made "
                     "again", self.name, ",".join(_subnets(found)), shown)
            await self._remove_pods_on(self.name)
            await self.api.network_remove(self.name)
        taken = await self._clear_stale(cidrs)
        if taken:
            raise PodNetworkTaken(
                f"the pod network {taken[0]} of another k3py cluster on this host has "
                f"subnet {shown} and is in use (two clusters on one host need their own "
                f"--cluster-cidr)")
        await self.api.network_create(self.name, [(c, gateway_of(c)) for c in cidrs],
                                      self.labels)

    async def _clear_stale(self, cidrs: list[str]) -> list[str]:
        """Remove k3py pod networks of other clusters on these subnets with nothing attached
        (left by a cluster that is gone); the names of those in use are returned."""
        wants = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        in_use = []
        for net in await self.api.network_list():
            name = net.get("name") or ""
            if name == self.name or (net.get("labels") or {}).get(NETWORK_LABEL) != "pods":
                continue
            if not any(ipaddress.ip_network(s, strict=False).overlaps(want)  # type: ignore
                       for s in _subnets(net) for want in wants
                       if ipaddress.ip_network(s, strict=False).version == want.version):
                continue
            if await self.api.network_users(name):
                in_use.append(name)
                continue
            log.info("removing the unused pod network %s of another cluster (subnet %s)",
                     name, ",".join(_subnets(net)))
            await self.api.network_remove(name)
        return in_use

    async def _remove_pods_on(self, network: str) -> None:
        for info in (await self.api.list_pods()).values():
            if network in (info.get("Networks") or []):
                await self.api.remove_pod(info.get("Id") or info.get("Name") or "", 2)

    async def _recreate_elsewhere(self, host_network: Callable[[str], bool]) -> None:
        """Remove this node's pods that are on another network (podman's default, or an
        older one): the pod syncer starts them again on this one."""
        for uid, info in (await self.api.list_pods()).items():
            nets = info.get("Networks") or []
            if host_network(uid) or not nets or self.name in nets:
                continue
            log.info("pod %s is on network %s: recreated on %s", info.get("Name"),
                     ",".join(nets), self.name)
            await self.api.remove_pod(info.get("Id") or info.get("Name") or "", 2)


def _subnets(net: dict) -> list[str]:
    return [s["subnet"] for s in net.get("subnets") or [] if isinstance(s, dict)
            and s.get("subnet")]
