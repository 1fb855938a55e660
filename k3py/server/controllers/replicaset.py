"""ReplicaSetController: keeps spec.replicas pods per ReplicaSet, adopts orphans, reports status.

Like upstream: expectations guard against duplicate creates/deletes while the pod informer lags."""

from __future__ import annotations

import asyncio
import logging

from k3py.api import errors
from k3py.api.objects import controller_ref, parse_time
from k3py.server.controllers.base import Controller, object_key
from k3py.server.controllers.workloads_common import (
    Expectations,
    claim_candidates,
    claim_pods,
    enqueue_when_available,
    is_terminating,
    now_dt,
    owner_handler,
    parse_int,
    pod_active,
    pod_available,
    pod_from_template,
    pod_ready,
    selector_matches,
    watch_pods,
    write_status,
)

__all__ = ["ReplicaSetController", "deletion_rank"]

log = logging.getLogger("k3py.controllers.replicaset")

BURST = 500


def deletion_rank(pod: dict) -> tuple:
    """Sort key: pods to delete first sort first (unscheduled, pending, not ready, newest)."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(status.get("phase") or "", 0)
    created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    ts = -created.timestamp() if created else 0.0
    restarts = sum(parse_int(c.get("restartCount")) for c in status.get("containerStatuses") or [])
    return (1 if spec.get("nodeName") else 0, phase_rank, 1 if pod_ready(pod) else 0,
            -restarts, ts)


class ReplicaSetController(Controller):
    name = "replicaset-controller"
    workers = 4
    group, plural, kind = "apps", "replicasets", "ReplicaSet"

    def setup(self) -> None:
        self.expectations = Expectations()
        self.rs_inf = self.ctx.informers.informer(self.group, self.plural)
        self.pod_inf, self.pod_res = watch_pods(self.ctx)
        self.rs_res = self.ctx.resource(self.group, self.plural)
        self.rs_inf.add_handler(owner_handler(self))
        self.pod_inf.add_handler(self._on_pod)

    # ------------------------------------------------------------ handlers

    def _owner_key(self, pod: dict) -> str | None:
        ref = controller_ref(pod)
        if not ref or ref.get("kind") != self.kind:
            return None
        ns = pod["metadata"].get("namespace")
        owner = self.rs_inf.get(ns, ref.get("name"))
        if owner is None or owner["metadata"].get("uid") != ref.get("uid"):
            return None
        return object_key(owner)

    def _orphan_owners(self, pod: dict) -> list[str]:
        ns = pod["metadata"].get("namespace")
        labels = pod["metadata"].get("labels") or {}
        return [object_key(rs) for rs in self.rs_inf.list(ns)
                if selector_matches((rs.get("spec") or {}).get("selector"), labels)]

    def _on_pod(self, etype: str, old: dict | None, new: dict | None) -> None:
        pod = new if new is not None else old
        if pod is None:
            return
        key = self._owner_key(pod)
        if etype == "ADDED":
            if key:
                self.expectations.observed_add(key)
                self.enqueue(key)
            elif controller_ref(pod) is None:
                for k in self._orphan_owners(pod):
                    self.enqueue(k)
            return
        if etype == "DELETED":
            if key:
                self.expectations.observed_del(key)
                self.enqueue(key)
            return
        # MODIFIED
        if old is not None:
            old_key = self._owner_key(old)
            if old_key and old_key != key:
                self.enqueue(old_key)
        if key:
            if new is not None and old is not None and is_terminating(new) and \
                    not is_terminating(old):
                self.expectations.observed_del(key)
            self.enqueue(key)
            enqueue_when_available(self, key, self._min_ready(key), old, new)
        elif controller_ref(pod) is None:
            for k in self._orphan_owners(pod):
                self.enqueue(k)

    def _min_ready(self, key: str) -> int:
        ns, _, name = key.partition("/")
        rs = self.rs_inf.get(ns, name)
        return parse_int(((rs or {}).get("spec") or {}).get("minReadySeconds"))

    # ------------------------------------------------------------ reconcile

    async def reconcile(self, key: str) -> None:
        ns, _, name = key.partition("/")
        rs = self.rs_inf.get(ns, name)
        if rs is None:
            self.expectations.forget(key)
            return
        spec = rs.get("spec") or {}
        selector = spec.get("selector")
        owned = await claim_pods(self.registry, self.pod_res, rs,
                                 claim_candidates(self.pod_inf, rs), selector)
        active = [p for p in owned if pod_active(p)]
        synced = self.expectations.satisfied(key)
        if synced and not is_terminating(rs):
            await self._manage(key, rs, active)
        await self._update_status(rs, owned)

    async def _manage(self, key: str, rs: dict, active: list[dict]) -> None:
        spec = rs.get("spec") or {}
        want = parse_int(spec.get("replicas"), 1)
        diff = len(active) - want
        if diff < 0:
            n = min(-diff, BURST)
            self.expectations.expect(key, adds=n)
            await self._create_pods(key, rs, n)
        elif diff > 0:
            victims = sorted(active, key=deletion_rank)[:min(diff, BURST)]
            self.expectations.expect(key, dels=len(victims))
            await self._delete_pods(key, rs, victims)

    async def _create_pods(self, key: str, rs: dict, n: int) -> None:
        """Slow start like upstream: batches of 1, 2, 4 ... stop at the first error."""
        template = (rs.get("spec") or {}).get("template") or {}
        batch, done = 1, 0
        while done < n:
            size = min(batch, n - done)
            results = await asyncio.gather(
                *(self._create_one(rs, template) for _ in range(size)), return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            done += size
            if failed:
                for _ in range(len(failed) + (n - done)):
                    self.expectations.observed_add(key)
                raise failed[0]
            batch *= 2

    async def _create_one(self, rs: dict, template: dict) -> None:
        pod = pod_from_template(rs, template, generate_name=rs["metadata"]["name"] + "-")
        created = await self.registry.create(self.pod_res, rs["metadata"]["namespace"], pod)
        await self.ctx.recorder.record(rs, "Normal", "SuccessfulCreate",
                                       f"Created pod: {created['metadata']['name']}",
                                       component=self.name)

    async def _delete_pods(self, key: str, rs: dict, victims: list[dict]) -> None:
        async def one(pod: dict) -> None:
            md = pod["metadata"]
            try:
                await self.registry.delete(self.pod_res, md["namespace"], md["name"],
                                           {"preconditions": {"uid": md.get("uid")}})
            except errors.StatusError as e:
                self.expectations.observed_del(key)
                if e.code == 404 or e.code == 409:
                    return
                raise
            await self.ctx.recorder.record(rs, "Normal", "SuccessfulDelete",
                                           f"Deleted pod: {md['name']}", component=self.name)
        results = await asyncio.gather(*(one(p) for p in victims), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _update_status(self, rs: dict, owned: list[dict]) -> None:
        spec = rs.get("spec") or {}
        mrs = parse_int(spec.get("minReadySeconds"))
        tmpl_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        active = [p for p in owned if pod_active(p)]
        now = now_dt()
        st = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(
                1 for p in active
                if all((p["metadata"].get("labels") or {}).get(k) == v
                       for k, v in tmpl_labels.items())),
            "readyReplicas": sum(1 for p in active if pod_ready(p)),
            "availableReplicas": sum(1 for p in active if pod_available(p, mrs, now)),
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
        await write_status(self, self.rs_res, rs, st, mrs, "readyReplicas", "availableReplicas",
                           omit_zero=("fullyLabeledReplicas", "readyReplicas",
                                      "availableReplicas"), same_object=True)
