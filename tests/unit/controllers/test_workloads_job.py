"""JobController against the real registry: completions, backoff limit, suspend, TTL.

Plus the pure want_active arithmetic."""

from __future__ import annotations

import pytest

from k3py.server.controllers.gc import GarbageCollector
from k3py.server.controllers.job import JobController, job_finished, want_active
from tests.unit.controllers.conftest import eventually

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


async def _pods(env, job_name: str | None = None) -> list[dict]:
    return [p for p in await env.all("pods")
            if job_name is None or p["metadata"]["labels"].get("job-name") == job_name]


async def _job(env, name: str = "pi") -> dict | None:
    return await env.registry.try_get(env.res("jobs"), "default", name)


async def test_job_completes(env) -> None:
    # The TTL deletes with propagationPolicy=Foreground; the real garbage collector finishes it.
    await env.start(JobController, GarbageCollector)
    reg = env.registry
    res = env.res("jobs")
    await reg.create(res, "default", job(completions=2, ttlSecondsAfterFinished=0))

    async def n_pods(n: int) -> bool:
        return len(await _pods(env)) == n
    await eventually(lambda: n_pods(1))
    p = (await _pods(env))[0]
    assert p["metadata"]["labels"]["job-name"] == "pi"
    assert p["metadata"]["ownerReferences"][0]["kind"] == "Job"

    async def active() -> bool:
        return ((await _job(env)).get("status") or {}).get("active") == 1
    await eventually(active)
    assert (await _job(env))["status"]["startTime"]
    await env.set_pod_status(p["metadata"]["name"], phase="Succeeded", ready=False)

    async def unfinished() -> list[dict]:
        return [q for q in await _pods(env)
                if (q.get("status") or {}).get("phase") != "Succeeded"]

    async def one_unfinished() -> bool:
        return len(await unfinished()) == 1
    await eventually(one_unfinished)
    for q in await unfinished():
        await env.set_pod_status(q["metadata"]["name"], phase="Succeeded", ready=False)

    async def gone() -> bool:
        return not await env.all("jobs")
    await eventually(gone)  # completed, then the TTL deleted it
    assert ("pi", "Normal", "Completed", "Job completed") in await env.events()


async def test_job_backoff_and_suspend(env) -> None:
    await env.start(JobController)
    reg = env.registry
    res = env.res("jobs")
    await reg.create(res, "default", job(backoffLimit=0))

    async def one_pod() -> bool:
        return len(await _pods(env)) == 1
    await eventually(one_pod)
    await env.set_pod_status((await _pods(env))[0]["metadata"]["name"], phase="Failed",
                             ready=False)

    async def failed() -> bool:
        return job_finished(await _job(env)) == "Failed"
    await eventually(failed)
    st = (await _job(env))["status"]
    conds = {x["type"]: x for x in st["conditions"]}
    assert conds["Failed"]["reason"] == "BackoffLimitExceeded"
    assert st["failed"] == 1

    await reg.create(res, "default", job("sus", suspend=True))

    async def suspended() -> bool:
        j = await _job(env, "sus")
        return any(x.get("type") == "Suspended"
                   for x in (j.get("status") or {}).get("conditions") or [])
    await eventually(suspended)
    assert not await _pods(env, "sus")
