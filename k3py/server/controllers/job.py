"""JobController: runs pods to completion with parallelism/completions, backoff, deadlines.

Sets Complete/Failed/Suspended conditions like upstream and honours ttlSecondsAfterFinished."""

from __future__ import annotations

import asyncio
import logging

from k3py.api import errors
from k3py.api.objects import deepcopy, now_rfc3339, parse_time
from k3py.server.controllers.base import Controller, object_key
from k3py.server.controllers.workloads_common import (
    Expectations,
    delete_exact,
    get_condition,
    is_terminating,
    now_dt,
    observe_pod_event,
    owned_by,
    owner_handler,
    owner_key_of,
    parse_int,
    pod_active,
    pod_from_template,
    pod_ready,
    set_condition,
    watch_pods,
)

__all__ = ["JobController", "job_finished", "want_active", "format_indexes", "parse_indexes"]

log = logging.getLogger("k3py.controllers.job")

COMPONENT = "job-controller"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"


def format_indexes(indexes: set[int]) -> str:
    """Upstream's completedIndexes form: sorted, consecutive runs as ranges ("0-2,5")."""
    out: list[str] = []
    run: list[int] = []
    for i in sorted(indexes):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def parse_indexes(s: str | None) -> set[int]:
    out: set[int] = set()
    for part in (s or "").split(","):
        a, _, b = part.partition("-")
        if a.isdigit():
            out.update(range(int(a), int(b if b.isdigit() else a) + 1))
    return out


def pod_index(pod: dict) -> int | None:
    v = ((pod.get("metadata") or {}).get("annotations") or {}).get(INDEX_KEY)
    return int(v) if v is not None and str(v).isdigit() else None


def job_finished(job: dict) -> str | None:
    """'Complete' or 'Failed' when the job has that condition True, else None."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c["type"]
    return None


def want_active(spec: dict, succeeded: int, active: int) -> int:
    parallelism = parse_int(spec.get("parallelism"), 1)
    completions = spec.get("completions")
    if completions is None:
        return 0 if succeeded > 0 else parallelism
    remaining = max(0, parse_int(completions) - succeeded)
    return min(parallelism, remaining)


def pod_restarts(pod: dict) -> int:
    return sum(parse_int(c.get("restartCount"))
               for c in (pod.get("status") or {}).get("containerStatuses") or [])


class JobController(Controller):
    name = "job-controller"
    workers = 4

    def setup(self) -> None:
        self.expectations = Expectations()
        self.job_inf = self.ctx.informers.informer("batch", "jobs")
        self.pod_inf, self.pod_res = watch_pods(self.ctx)
        self.job_res = self.ctx.resource("batch", "jobs")
        self.job_inf.add_handler(owner_handler(self))
        self.pod_inf.add_handler(self._on_pod)

    def _on_pod(self, etype: str, old: dict | None, new: dict | None) -> None:
        key = owner_key_of(new if new is not None else old, "Job")
        if key is None:
            return
        observe_pod_event(self.expectations, key, etype, old, new)
        self.enqueue(key)

    async def _record(self, job: dict, reason: str, msg: str, type_: str = "Normal") -> None:
        await self.ctx.recorder.record(job, type_, reason, msg, component=COMPONENT)

    # ------------------------------------------------------------ reconcile

    async def reconcile(self, key: str) -> None:
        ns, _, name = key.partition("/")
        cached = self.job_inf.get(ns, name)
        if cached is None:
            self.expectations.forget(key)
            return
        job = deepcopy(cached)
        spec = job.get("spec") or {}
        status = deepcopy(job.get("status") or {})
        pods = owned_by(self.pod_inf, job)
        finished = job_finished(job)
        if finished:
            await self._delete_pods(key, job, [p for p in pods if pod_active(p)])
            await self._maybe_ttl(job, status)
            return
        if is_terminating(job):
            return
        now = now_rfc3339()
        active = [p for p in pods if pod_active(p)]
        succeeded_pods = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
        failed_pods = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
        succeeded = max(parse_int(status.get("succeeded")), len(succeeded_pods))
        indexed = spec.get("completionMode") == "Indexed"
        if indexed:
            done_idx = parse_indexes(status.get("completedIndexes")) | {
                i for i in map(pod_index, succeeded_pods) if i is not None}
            done_idx = {i for i in done_idx if i < parse_int(spec.get("completions"))}
            succeeded = len(done_idx)
            if done_idx:
                status["completedIndexes"] = format_indexes(done_idx)
        failed = max(parse_int(status.get("failed")), len(failed_pods))
        suspended = bool(spec.get("suspend"))
        events: list[tuple[str, str, str]] = []

        if not suspended and not status.get("startTime"):
            status["startTime"] = now
        backoff_limit = parse_int(spec.get("backoffLimit"), 6)
        restart_failures = sum(pod_restarts(p) for p in active) \
            if (spec.get("template") or {}).get("spec", {}).get("restartPolicy") == "OnFailure" \
            else 0
        completions = spec.get("completions")
        complete = (succeeded >= parse_int(completions) if completions is not None
                    else succeeded > 0 and not active)
        fail_reason = fail_msg = None
        if not complete:
            if failed + restart_failures > backoff_limit:
                fail_reason, fail_msg = ("BackoffLimitExceeded",
                                         "Job has reached the specified backoff limit")
            elif self._past_deadline(spec, status):
                fail_reason, fail_msg = ("DeadlineExceeded",
                                         "Job was active longer than specified deadline")
        if complete:
            await self._delete_pods(key, job, active)
            active = []
            set_condition(status, "SuccessCriteriaMet", "True", "CompletionsReached",
                          "Reached expected number of succeeded pods", now)
            set_condition(status, "Complete", "True", "CompletionsReached",
                          "Reached expected number of succeeded pods", now)
            status["completionTime"] = now
            events.append(("Normal", "Completed", "Job completed"))
        elif fail_reason:
            await self._delete_pods(key, job, active)
            active = []
            set_condition(status, "FailureTarget", "True", fail_reason, fail_msg, now)
            set_condition(status, "Failed", "True", fail_reason, fail_msg, now)
            events.append(("Warning", fail_reason, fail_msg))
        elif suspended:
            if active:
                await self._delete_pods(key, job, active)
                active = []
            cond = get_condition({"status": status}, "Suspended")
            if not cond or cond.get("status") != "True":
                set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended", now)
                events.append(("Normal", "Suspended", "Job suspended"))
            status.pop("startTime", None)
        else:
            cond = get_condition({"status": status}, "Suspended")
            if cond and cond.get("status") == "True":
                set_condition(status, "Suspended", "False", "JobResumed", "Job resumed", now)
                events.append(("Normal", "Resumed", "Job resumed"))
            if self.expectations.satisfied(key):
                diff = want_active(spec, succeeded, len(active)) - len(active)
                if diff > 0:
                    indexes: list[int | None] = [None] * diff
                    if indexed:
                        busy = done_idx | {pod_index(p) for p in active}
                        indexes = [i for i in range(parse_int(spec.get("completions")))
                                   if i not in busy][:diff]
                    if indexes:
                        self.expectations.expect(key, adds=len(indexes))
                        await self._create_pods(key, job, indexes)
                elif diff < 0:
                    victims = sorted(active, key=lambda p: (pod_ready(p), bool(
                        (p.get("spec") or {}).get("nodeName"))))[:-diff]
                    await self._delete_pods(key, job, victims)
                    active = [p for p in active if p not in victims]
            deadline = spec.get("activeDeadlineSeconds")
            if deadline is not None and status.get("startTime"):
                start = parse_time(status["startTime"])
                if start:
                    left = parse_int(deadline) - (now_dt() - start).total_seconds()
                    self.enqueue(key, after=max(left, 0) + 0.2)

        status["active"] = len(active)
        status["ready"] = sum(1 for p in active if pod_ready(p))
        status["succeeded"] = succeeded
        status["failed"] = failed
        status["terminating"] = sum(1 for p in pods if is_terminating(p))
        for k in ("active", "succeeded", "failed", "terminating"):
            if not status.get(k):
                status.pop(k, None)
        if status != (job.get("status") or {}):
            await self._write_status(job, status)
        for type_, reason, msg in events:
            await self._record(job, reason, msg, type_)
        if job_finished({"status": status}):
            await self._maybe_ttl(job, status)

    def _past_deadline(self, spec: dict, status: dict) -> bool:
        deadline = spec.get("activeDeadlineSeconds")
        start = parse_time(status.get("startTime"))
        if deadline is None or start is None:
            return False
        return (now_dt() - start).total_seconds() >= parse_int(deadline)

    async def _write_status(self, job: dict, status: dict) -> None:
        uid = job["metadata"]["uid"]

        def mutate(cur: dict) -> dict | None:
            if cur["metadata"].get("uid") != uid or job_finished(cur):
                return None
            cur["status"] = status
            return cur
        await self.registry.update_with(self.job_res, job["metadata"]["namespace"],
                                        job["metadata"]["name"], mutate, subresource="status")

    async def _maybe_ttl(self, job: dict, status: dict) -> None:
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None or is_terminating(job):
            return
        finished_at = None
        for c in status.get("conditions") or []:
            if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
                finished_at = parse_time(c.get("lastTransitionTime"))
        finished_at = parse_time(status.get("completionTime")) or finished_at
        if finished_at is None:
            return
        left = parse_int(ttl) - (now_dt() - finished_at).total_seconds()
        if left > 0:
            self.enqueue(object_key(job), after=left + 0.1)
            return
        try:
            await self.registry.delete(self.job_res, job["metadata"]["namespace"],
                                       job["metadata"]["name"],
                                       {"propagationPolicy": "Foreground",
                                        "preconditions": {"uid": job["metadata"]["uid"]}})
        except errors.StatusError as e:
            if e.code not in (404, 409):
                raise

    # ------------------------------------------------------------ pods

    def _pod_for(self, job: dict, index: int | None = None) -> dict:
        template = deepcopy((job.get("spec") or {}).get("template") or {})
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        uid, name = job["metadata"]["uid"], job["metadata"]["name"]
        labels.setdefault("batch.kubernetes.io/controller-uid", uid)
        labels.setdefault("batch.kubernetes.io/job-name", name)
        labels.setdefault("controller-uid", uid)
        labels.setdefault("job-name", name)
        if index is not None:
            labels[INDEX_KEY] = str(index)
            template["metadata"].setdefault("annotations", {})[INDEX_KEY] = str(index)
        pod = pod_from_template(job, template, generate_name=f"{name}-" + (
            f"{index}-" if index is not None else ""))
        pod["spec"].setdefault("restartPolicy", "Never")
        if index is not None:
            pod["spec"].setdefault("hostname", f"{name}-{index}")
            env = {"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                "fieldPath": f"metadata.annotations['{INDEX_KEY}']"}}}
            for c in (pod["spec"].get("initContainers") or []) + \
                    (pod["spec"].get("containers") or []):
                c["env"] = [e for e in c.get("env") or [] if e.get("name") != env["name"]]
                c["env"].insert(0, env)
        return pod

    async def _create_pods(self, key: str, job: dict, indexes: list[int | None]) -> None:
        async def one(index: int | None) -> None:
            created = await self.registry.create(self.pod_res, job["metadata"]["namespace"],
                                                 self._pod_for(job, index))
            await self._record(job, "SuccessfulCreate",
                               f"Created pod: {created['metadata']['name']}")
        results = await asyncio.gather(*(one(i) for i in indexes), return_exceptions=True)
        errs = [r for r in results if isinstance(r, BaseException)]
        for _ in errs:
            self.expectations.observed_add(key)
        if errs:
            raise errs[0]

    async def _delete_pods(self, key: str, job: dict, pods: list[dict]) -> None:
        for pod in pods:
            if await delete_exact(self.registry, self.pod_res, pod):
                await self._record(job, "SuccessfulDelete",
                                   f"Deleted pod: {pod['metadata']['name']}")
