"""CronJob scheduling math and the controller creating a Job for a missed schedule.

Uses the real registry; the CronJob's last run is back-dated so one run is already due."""

from __future__ import annotations

import datetime as dt

import pytest

from k3py.server.controllers.cronjob import (
    CronJobController,
    job_name_for,
    most_recent_schedule,
)
from tests.unit.controllers.conftest import eventually

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


async def test_cronjob_creates_job(env) -> None:
    await env.start(CronJobController)
    reg = env.registry
    res = env.res("cronjobs")
    await reg.create(res, "default", cj(schedule="* * * * *", concurrencyPolicy="Forbid"))
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")

    # The registry keeps metadata.creationTimestamp on update, so the last run is back-dated
    # through the status subresource instead: three scheduled times are then due.
    def backdate(o: dict) -> dict:
        o["status"] = dict(o.get("status") or {}, lastScheduleTime=past)
        return o
    assert await reg.update_with(res, "default", "tick", backdate, subresource="status")

    async def one_job() -> bool:
        return len(await env.all("jobs")) == 1
    await eventually(one_job)
    job = (await env.all("jobs"))[0]
    assert job["metadata"]["name"].startswith("tick-")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"

    async def active() -> bool:
        return bool(((await env.all("cronjobs"))[0].get("status") or {}).get("active"))
    await eventually(active)
    st = (await env.all("cronjobs"))[0]["status"]
    assert st["lastScheduleTime"] and st["lastScheduleTime"] != past
    assert st["active"][0]["name"] == job["metadata"]["name"]
