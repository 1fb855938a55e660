"""JobController against the in-memory registry: completions, backoff limit, suspend, TTL.

Plus the pure want_active arithmetic."""

from __future__ import annotations

import pytest

from k3py.server.controllers.job import JobController, job_finished, want_active
from tests.unit.controllers.test_workloads_fakes import make_ctx, settle

pytestmark = pytest.mark.unit


def job(name: str = "pi", **spec) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "default"},
            "spec": dict({"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "c", "image": "busybox"}]}}}, **spec)}


def test_want_active() -> None:
    assert want_active({}, 0, 0) == 1
    assert want_active({}, 1, 0) == 0
    assert want_active({"parallelism": 3, "completions": 5}, 3, 0) == 2
    assert want_active({"parallelism": 3, "completions": 5}, 0, 0) == 3


async def _run(ctx):
    c = JobController(ctx)
    await c.start()
    return c


async def test_job_completes() -> None:
    reg, ctx = make_ctx()
    c = await _run(ctx)
    res = reg.resources.find("batch", "jobs")
    try:
        await reg.create(res, "default", job(completions=2, ttlSecondsAfterFinished=0))
        await settle(lambda: len(reg.all("pods")) == 1)
        p = reg.all("pods")[0]
        assert p["metadata"]["labels"]["job-name"] == "pi"
        assert p["metadata"]["ownerReferences"][0]["kind"] == "Job"
        await settle(lambda: (reg.all("jobs")[0].get("status") or {}).get("active") == 1)
        assert reg.all("jobs")[0]["status"]["startTime"]
        await reg.set_pod_status(p["metadata"]["name"], phase="Succeeded", ready=False)
        await settle(lambda: len([q for q in reg.all("pods")
                                  if (q.get("status") or {}).get("phase") != "Succeeded"]) == 1)
        for q in reg.all("pods"):
            if (q.get("status") or {}).get("phase") != "Succeeded":
                await reg.set_pod_status(q["metadata"]["name"], phase="Succeeded", ready=False)
        await settle(lambda: not reg.all("jobs"))  # completed, then the TTL deleted it
        assert ("pi", "Normal", "Completed", "Job completed") in ctx.recorder.events
    finally:
        await c.stop()
        await ctx.informers.stop()


async def test_job_backoff_and_suspend() -> None:
    reg, ctx = make_ctx()
    c = await _run(ctx)
    res = reg.resources.find("batch", "jobs")
    try:
        await reg.create(res, "default", job(backoffLimit=0))
        await settle(lambda: len(reg.all("pods")) == 1)
        await reg.set_pod_status(reg.all("pods")[0]["metadata"]["name"], phase="Failed",
                                 ready=False)
        await settle(lambda: job_finished(reg.all("jobs")[0]) == "Failed")
        conds = {x["type"]: x for x in reg.all("jobs")[0]["status"]["conditions"]}
        assert conds["Failed"]["reason"] == "BackoffLimitExceeded"
        assert reg.all("jobs")[0]["status"]["failed"] == 1

        await reg.create(res, "default", job("sus", suspend=True))
        await settle(lambda: any(x.get("type") == "Suspended" for j in reg.all("jobs")
                                 if j["metadata"]["name"] == "sus"
                                 for x in (j.get("status") or {}).get("conditions") or []))
        assert not [p for p in reg.all("pods") if p["metadata"]["labels"]["job-name"] == "sus"]
    finally:
        await c.stop()
        await ctx.informers.stop()
