"""Lease-based leader election, as upstream's client-go leaderelection: of the servers sharing
a datastore, one at a time runs a group of controllers (kube-controller-manager,
kube-scheduler); the holder renews a coordination.k8s.io Lease in kube-system, another server
takes it over once the Lease has not changed for its duration.

Used by k3py.server.bootstrap.start_controllers. The times are upstream's defaults (15 s lease,
10 s renew deadline, 2 s retry). Whether a Lease expired is judged by when this server last saw
it change, not by the holder's clock (as upstream: the servers' clocks need not agree)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from k3py.api import errors
from k3py.api.objects import now_rfc3339
from k3py.server.registry import Registry
from k3py.server.store.backend import StoreError

__all__ = ["ElectionTimes", "LeaderElector", "LEASE_NAMESPACE", "Stoppable"]

log = logging.getLogger("k3py.leaderelection")

LEASE_NAMESPACE = "kube-system"


@dataclass(frozen=True, slots=True)
class ElectionTimes:
    lease_duration: float = 15.0  # a Lease unchanged this long may be taken over
    renew_deadline: float = 10.0  # the leader gives up after failing to renew this long
    retry_period: float = 2.0  # between attempts to acquire or renew


class Stoppable(Protocol):
    async def stop(self) -> None: ...


class LeaderElector:
    """Runs `start_group()` (which returns what it started) while this server holds Lease
    `name`, and stops that when leadership is lost or on `stop()`."""

    def __init__(self, registry: Registry, name: str, identity: str,
                 start_group: Callable[[], Awaitable[Stoppable]],
                 times: ElectionTimes = ElectionTimes()) -> None:
        self.registry = registry
        self.name = name
        self.identity = identity
        self.times = times
        self._start_group = start_group
        self._running: Stoppable | None = None
        self._observed: tuple | None = None  # (holder, renewTime, resourceVersion)
        self._observed_at = 0.0
        self._task: asyncio.Task | None = None
        self.leading = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"leader-election-{self.name}")

    async def stop(self) -> None:
        """Stop the group and release the Lease (upstream's ReleaseOnCancel), so another
        server takes over at once instead of after the lease duration."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self.leading.is_set():
            await self._stop_group()
            with contextlib.suppress(Exception):
                await self._release()

    async def _run(self) -> None:
        while True:
            while not await self._try_acquire_or_renew():
                await asyncio.sleep(self.times.retry_period)
            log.info("%s: %s became leader", self.name, self.identity)
            self.leading.set()
            try:
                self._running = await self._start_group()
            except Exception:  # noqa: BLE001 - a group that cannot start: let another try
                log.exception("%s: starting the leader's controllers failed", self.name)
                await self._stop_group()
                await self._release()
                await asyncio.sleep(self.times.lease_duration)
                continue
            await self._keep()
            log.warning("%s: leadership lost (no renewal for %.0f s); stopping its controllers",
                        self.name, self.times.renew_deadline)
            await self._stop_group()

    async def _keep(self) -> None:
        """Renew every retry period; return once renewals failed for the renew deadline."""
        last_renewed = time.monotonic()
        while time.monotonic() - last_renewed < self.times.renew_deadline:
            await asyncio.sleep(self.times.retry_period)
            if await self._try_acquire_or_renew():
                last_renewed = time.monotonic()

    async def _stop_group(self) -> None:
        self.leading.clear()
        running, self._running = self._running, None
        if running is not None:
            with contextlib.suppress(Exception):
                await running.stop()

    def _spec(self, old: dict, now: str) -> dict:
        taking_over = old.get("holderIdentity") != self.identity
        return {"holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.times.lease_duration)),
                "acquireTime": now if taking_over else old.get("acquireTime", now),
                "renewTime": now,
                "leaseTransitions": int(old.get("leaseTransitions") or 0) +
                (1 if taking_over and old.get("holderIdentity") else 0)}

    async def _try_acquire_or_renew(self) -> bool:
        res = self.registry.served("coordination.k8s.io", "leases")
        now = now_rfc3339(micro=True)
        try:
            lease = await self.registry.try_get(res, LEASE_NAMESPACE, self.name)
            if lease is None:
                await self.registry.create(res, LEASE_NAMESPACE, {
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": LEASE_NAMESPACE},
                    "spec": self._spec({}, now)})
                return True
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or ""
            seen = (holder, spec.get("renewTime"), lease["metadata"].get("resourceVersion"))
            if seen != self._observed:
                self._observed, self._observed_at = seen, time.monotonic()
            duration = float(spec.get("leaseDurationSeconds") or self.times.lease_duration)
            if holder and holder != self.identity and \
                    time.monotonic() - self._observed_at < duration:
                return False  # held by another server, renewed within its duration
            lease["spec"] = self._spec(spec, now)
            await self.registry.update(res, LEASE_NAMESPACE, self.name, lease)
            return True
        except (errors.StatusError, StoreError) as e:  # a conflict: another server wrote first
            log.debug("%s: acquire/renew failed: %s", self.name, e)
            return False

    async def _release(self) -> None:
        res = self.registry.served("coordination.k8s.io", "leases")
        lease = await self.registry.try_get(res, LEASE_NAMESPACE, self.name)
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
            return
        lease["spec"] = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
        await self.registry.update(res, LEASE_NAMESPACE, self.name, lease)
