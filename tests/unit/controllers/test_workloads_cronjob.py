"""CronJob scheduling math and the controller creating a Job for a missed schedule.

Uses the in-memory registry; the CronJob is back-dated so one run is already due."""

from __future__ import annotations

import datetime as dt

import pytest

from k3py.server.controllers.cronjob import (
    CronJobController,
    job_name_for,
    most_recent_schedule,
)
from tests.unit.controllers.test_workloads_fakes import make_ctx, settle

pytestmark = pytest.mark.unit


def cj(**spec) -> dict:
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "tick", "namespace": "default",
                         "creationTimestamp": "2024-01-01T00:00:30Z"},
            "spec": dict({"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": "c", "image": "busybox"}]}}}}}, **spec)}


def test_job_name_and_schedule() -> None:
    t = dt.datetime(2024, 1, 1, 0, 10, tzinfo=dt.UTC)
    assert job_name_for("tick", t) == f"tick-{int(t.timestamp()) // 60}"
    got, missed = most_recent_schedule(cj(), dt.datetime(2024, 1, 1, 0, 12, tzinfo=dt.UTC))
    assert got == t and missed == 2
    obj = cj(startingDeadlineSeconds=60)
    assert most_recent_schedule(obj, dt.datetime(2024, 1, 1, 0, 12, tzinfo=dt.UTC)) == (None, 0)
    obj = cj()
    obj["status"] = {"lastScheduleTime": "2024-01-01T00:10:00Z"}
    assert most_recent_schedule(obj, dt.datetime(2024, 1, 1, 0, 12, tzinfo=dt.UTC))[0] is None


async def test_cronjob_creates_job() -> None:
    reg, ctx = make_ctx()
    c = CronJobController(ctx)
    await c.start()
    res = reg.resources.find("batch", "cronjobs")
    try:
        await reg.create(res, "default", cj(schedule="* * * * *", concurrencyPolicy="Forbid"))
        past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def backdate(o: dict) -> dict:
            o["metadata"]["creationTimestamp"] = past
            o["spec"]["suspend"] = False
            return o
        await reg.update_with(res, "default", "tick", backdate)
        await settle(lambda: len(reg.all("jobs")) == 1)
        job = reg.all("jobs")[0]
        assert job["metadata"]["name"].startswith("tick-")
        assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
        await settle(lambda: (reg.all("cronjobs")[0].get("status") or {}).get("active"))
        st = reg.all("cronjobs")[0]["status"]
        assert st["lastScheduleTime"] and st["active"][0]["name"] == job["metadata"]["name"]
    finally:
        await c.stop()
        await ctx.informers.stop()
