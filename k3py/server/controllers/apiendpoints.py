"""The `kubernetes` Service's endpoints when several servers share a datastore (upstream's lease
endpoint reconciler): each server renews a Lease kube-system/apiserver-<id> that names its
address, and writes default/kubernetes's Endpoints and EndpointSlice with the address of every
server whose Lease is current.

Started on every server by k3py.server.bootstrap; agents learn the servers from that
EndpointSlice and fail over to them (k3py.agent.edgehub)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging

from k3py.api import errors
from k3py.api.objects import now_rfc3339, parse_time
from k3py.server.controllers.service import ensure_kubernetes_endpoints
from k3py.server.registry import ListOptions, Registry
from k3py.server.store.backend import StoreError

__all__ = ["APIServerEndpoints", "ADDRESS_ANNOTATION", "IDENTITY_LABEL", "NAMESPACE",
           "live_addresses", "live_leases", "apiserver_leases", "lease_age", "is_current", "lease_name",
           "address_of"]

log = logging.getLogger("k3py.controllers")

NAMESPACE = "kube-system"
IDENTITY_LABEL = "apiserver.kubernetes.io/identity"  # upstream's label on apiserver Leases
ADDRESS_ANNOTATION = "k3py.io/advertise-address"
RENEW_EVERY = 10.0  # upstream's endpoint reconciler interval
LEASE_DURATION = 15  # upstream's master lease TTL


class APIServerEndpoints:
    """This server's Lease, renewed every RENEW_EVERY, and the endpoints of all live ones."""

    def __init__(self, registry: Registry, identity: str, address: str, port: int) -> None:
        self.registry = registry
        self.name = lease_name(identity)
        self.address = address
        self.port = port
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.tick()
        self._task = asyncio.create_task(self._loop(), name="apiserver-endpoints")

    async def stop(self) -> None:
        """Leave the endpoints at once (upstream removes itself on a clean shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        with contextlib.suppress(Exception):
            await self.registry.delete(self._leases(), NAMESPACE, self.name)
            await self._reconcile()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                await self.tick()
            except (errors.StatusError, StoreError) as e:  # the datastore is away: next time
                log.warning("apiserver endpoints: %s", e)

    def _leases(self):
        return self.registry.served("coordination.k8s.io", "leases")

    async def tick(self) -> None:
        await self._renew()
        await self._reconcile()

    async def _renew(self) -> None:
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_DURATION,
                "renewTime": now_rfc3339(micro=True)}

        def renew(cur: dict) -> dict:
            cur["spec"] = {**(cur.get("spec") or {}), **spec}
            cur["metadata"].setdefault("annotations", {})[ADDRESS_ANNOTATION] = self.address
            return cur
        if await self.registry.update_with(self._leases(), NAMESPACE, self.name, renew):
            return
        await self.registry.create(self._leases(), NAMESPACE, {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "namespace": NAMESPACE,
                         "labels": {IDENTITY_LABEL: "kube-apiserver"},
                         "annotations": {ADDRESS_ANNOTATION: self.address}},
            "spec": {**spec, "acquireTime": spec["renewTime"]}})

    async def _reconcile(self) -> None:
        live = await live_addresses(self.registry)
        if live:
            await ensure_kubernetes_endpoints(self.registry, live, self.port)


async def live_addresses(registry: Registry) -> list[str]:
    """The advertise addresses of the servers whose apiserver Lease is current, sorted."""
    return sorted({address_of(lease) for lease in await live_leases(registry)})


async def live_leases(registry: Registry) -> list[dict]:
    """The apiserver Leases that are current and name their server's address."""
    return [lease for lease in await apiserver_leases(registry) if is_current(lease)]


async def apiserver_leases(registry: Registry) -> list[dict]:
    """Every server's apiserver Lease that names its address, current or not (a server that
    stopped cleanly deleted its own)."""
    leases = await registry.list(registry.served("coordination.k8s.io", "leases"), NAMESPACE,
                                 ListOptions(label_selector=f"{IDENTITY_LABEL}=kube-apiserver"))
    return [lease for lease in leases["items"] if address_of(lease)]


def lease_age(lease: dict) -> float:
    """Seconds since the Lease was renewed (infinite when it never was)."""
    renewed = parse_time((lease.get("spec") or {}).get("renewTime"))
    if renewed is None:
        return float("inf")
    return (_dt.datetime.now(_dt.UTC) - renewed).total_seconds()


def is_current(lease: dict) -> bool:
    """Renewed within its duration: its server is up."""
    return lease_age(lease) < float((lease.get("spec") or {}).get("leaseDurationSeconds")
                                    or LEASE_DURATION)


def lease_name(identity: str) -> str:
    """The name of the apiserver Lease of the server whose id is `identity`."""
    return f"apiserver-{identity}"


def address_of(lease: dict) -> str:
    return (lease["metadata"].get("annotations") or {}).get(ADDRESS_ANNOTATION, "")
