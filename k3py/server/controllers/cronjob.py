"""CronJobController: creates Jobs `<cj>-<minutes since epoch>` on schedule (cronjob v2 logic).

Concurrency policies Allow/Forbid/Replace, suspend, startingDeadlineSeconds, history limits."""

from __future__ import annotations

import datetime as _dt
import logging

from k3py.api import errors
from k3py.api.objects import controller_ref, deepcopy, make_controller_ref, parse_time
from k3py.server.controllers.base import Controller, object_key
from k3py.server.controllers.cron import CronError, parse_cron
from k3py.server.controllers.job import job_finished
from k3py.server.controllers.workloads_common import (
    OWNER_INDEX,
    is_terminating,
    now_dt,
    owned_by,
    owner_index,
    parse_int,
)

__all__ = ["CronJobController", "job_name_for", "most_recent_schedule"]

log = logging.getLogger("k3py.controllers.cronjob")

COMPONENT = "cronjob-controller"
SCHEDULED_AT = "batch.kubernetes.io/cronjob-scheduled-timestamp"


def job_name_for(cj_name: str, t: _dt.datetime) -> str:
    return f"{cj_name}-{int(t.timestamp() // 60)}"


def _fmt(t: _dt.datetime) -> str:
    return t.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def most_recent_schedule(cj: dict, now: _dt.datetime) -> tuple[_dt.datetime | None, int]:
    """(most recent unmet schedule time <= now or None, number of missed times)."""
    spec = cj.get("spec") or {}
    sched = parse_cron(spec.get("schedule") or "", spec.get("timeZone"))
    status = cj.get("status") or {}
    earliest = parse_time(status.get("lastScheduleTime")) or \
        parse_time(cj["metadata"].get("creationTimestamp")) or now
    deadline = spec.get("startingDeadlineSeconds")
    if deadline is not None:
        floor = now - _dt.timedelta(seconds=parse_int(deadline))
        earliest = max(earliest, floor)
    times = sched.times_between(earliest, now)
    if not times:
        return None, 0
    return times[-1], len(times)


class CronJobController(Controller):
    name = "cronjob-controller"
    workers = 2

    def setup(self) -> None:
        self.cj_inf = self.ctx.informers.informer("batch", "cronjobs")
        self.job_inf = self.ctx.informers.informer("batch", "jobs")
        self.job_inf.add_index(OWNER_INDEX, owner_index)
        self.cj_res = self.ctx.resource("batch", "cronjobs")
        self.job_res = self.ctx.resource("batch", "jobs")
        self.cj_inf.add_handler(self._on_cj)
        self.job_inf.add_handler(self._on_job)

    def _on_cj(self, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old
        if obj is not None:
            self.enqueue(object_key(obj))

    def _on_job(self, etype: str, old: dict | None, new: dict | None) -> None:
        job = new if new is not None else old
        ref = controller_ref(job or {})
        if ref and ref.get("kind") == "CronJob":
            self.enqueue(f"{job['metadata'].get('namespace')}/{ref.get('name')}")

    async def _record(self, cj: dict, reason: str, msg: str, type_: str = "Normal") -> None:
        await self.ctx.recorder.record(cj, type_, reason, msg, component=COMPONENT)

    async def reconcile(self, key: str) -> None:
        ns, _, name = key.partition("/")
        cached = self.cj_inf.get(ns, name)
        if cached is None or is_terminating(cached):
            return
        cj = deepcopy(cached)
        spec = cj.get("spec") or {}
        jobs = owned_by(self.job_inf, cj)
        status = deepcopy(cj.get("status") or {})
        active_refs = []
        for j in jobs:
            if job_finished(j) or is_terminating(j):
                if job_finished(j) == "Complete":
                    ct = (j.get("status") or {}).get("completionTime")
                    if ct and (not status.get("lastSuccessfulTime") or
                               parse_time(ct) > parse_time(status["lastSuccessfulTime"])):
                        status["lastSuccessfulTime"] = ct
                continue
            active_refs.append(self._ref(j))
        await self._cleanup_history(cj, jobs)
        now = now_dt()
        try:
            sched = parse_cron(spec.get("schedule") or "", spec.get("timeZone"))
            scheduled, missed = most_recent_schedule(cj, now)
        except CronError as e:
            await self._record(cj, "UnparseableSchedule",
                               f"unparseable schedule: {spec.get('schedule')!r} : {e}",
                               "Warning")
            return
        if scheduled is not None and not spec.get("suspend"):
            if missed > 100:
                await self._record(cj, "TooManyMissedTimes",
                                   "too many missed start times. Set or decrease "
                                   ".spec.startingDeadlineSeconds or check clock skew",
                                   "Warning")
            active_refs = await self._run(cj, scheduled, active_refs, jobs, status)
        status["active"] = active_refs
        if not active_refs:
            status.pop("active", None)
        if status != (cj.get("status") or {}):
            uid = cj["metadata"]["uid"]

            def mutate(cur: dict) -> dict | None:
                if cur["metadata"].get("uid") != uid:
                    return None
                cur["status"] = status
                return cur
            await self.registry.update_with(self.cj_res, ns, name, mutate,
                                            subresource="status")
        nxt = sched.next_after(now)
        if nxt is not None:
            self.enqueue(key, after=max((nxt - now_dt()).total_seconds(), 0) + 0.1)

    def _ref(self, j: dict) -> dict:
        return {"apiVersion": "batch/v1", "kind": "Job", "name": j["metadata"]["name"],
                "namespace": j["metadata"]["namespace"], "uid": j["metadata"]["uid"],
                "resourceVersion": j["metadata"].get("resourceVersion")}

    async def _run(self, cj: dict, scheduled: _dt.datetime, active: list[dict],
                   jobs: list[dict], status: dict) -> list[dict]:
        spec = cj.get("spec") or {}
        ns, name = cj["metadata"]["namespace"], cj["metadata"]["name"]
        job_name = job_name_for(name, scheduled)
        if any(j["metadata"]["name"] == job_name for j in jobs):
            status["lastScheduleTime"] = max(status.get("lastScheduleTime") or "",
                                             _fmt(scheduled))
            return active
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and active:
            await self._record(cj, "JobAlreadyActive",
                               "Not starting job because prior execution is running and "
                               "concurrency policy is Forbid")
            return active
        if policy == "Replace":
            for ref in active:
                try:
                    await self.registry.delete(self.job_res, ns, ref["name"],
                                               {"propagationPolicy": "Background"})
                    await self._record(cj, "SuccessfulDelete", f"Deleted job {ref['name']}")
                except errors.StatusError as e:
                    if e.code != 404:
                        raise
            active = []
        tmpl = deepcopy(spec.get("jobTemplate") or {})
        tmd = tmpl.get("metadata") or {}
        ann = dict(tmd.get("annotations") or {})
        ann[SCHEDULED_AT] = _fmt(scheduled)
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": job_name, "namespace": ns,
                            "labels": dict(tmd.get("labels") or {}), "annotations": ann,
                            "ownerReferences": [make_controller_ref(cj)]},
               "spec": tmpl.get("spec") or {}}
        try:
            created = await self.registry.create(self.job_res, ns, job)
        except errors.StatusError as e:
            if e.code != 409:
                await self._record(cj, "FailedCreate", f"Error creating job: {e}", "Warning")
                raise
            created = await self.registry.try_get(self.job_res, ns, job_name)
            if created is None or not any(
                    r.get("uid") == cj["metadata"]["uid"]
                    for r in created["metadata"].get("ownerReferences") or []):
                return active
        else:
            await self._record(cj, "SuccessfulCreate", f"Created job {job_name}")
        status["lastScheduleTime"] = _fmt(scheduled)
        if not job_finished(created):
            active = active + [self._ref(created)]
        return active

    async def _cleanup_history(self, cj: dict, jobs: list[dict]) -> None:
        spec = cj.get("spec") or {}
        for kind, default in (("Complete", 3), ("Failed", 1)):
            field = "successfulJobsHistoryLimit" if kind == "Complete" else \
                "failedJobsHistoryLimit"
            limit = spec.get(field)
            limit = default if limit is None else parse_int(limit, default)
            done = sorted((j for j in jobs if job_finished(j) == kind and
                           not is_terminating(j)),
                          key=lambda j: (j.get("status") or {}).get("startTime") or
                          j["metadata"].get("creationTimestamp") or "")
            for j in done[:max(0, len(done) - limit)]:
                try:
                    await self.registry.delete(self.job_res, j["metadata"]["namespace"],
                                               j["metadata"]["name"],
                                               {"propagationPolicy": "Background"})
                    await self._record(cj, "SawCompletedJob" if kind == "Complete" else
                                       "SuccessfulDelete", f"Deleted job {j['metadata']['name']}")
                except errors.StatusError as e:
                    if e.code != 404:
                        raise
