"""PodWorkers (agent/pods/workers.py): one pod's jobs run in order, other pods' jobs run
meanwhile, a failed job does not end its worker, duplicates of a waiting job are dropped,
idle workers are collected, and stop() cancels what runs."""

from __future__ import annotations

import asyncio

from k3py.agent.pods.workers import PodWorkers


async def _until(cond, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def test_one_pods_jobs_run_in_order_while_other_pods_go_on():
    workers = PodWorkers(idle_seconds=5)
    done: list[str] = []
    release = asyncio.Event()

    def job(name: str, wait: asyncio.Event | None = None):
        async def run() -> None:
            if wait is not None:
                await wait.wait()
            done.append(name)
        return run
    workers.submit("slow", "stop", job("slow-stop", release))  # a long grace period
    workers.submit("slow", "start", job("slow-start"))
    for i in range(5):
        workers.submit(f"new-{i}", "start", job(f"new-{i}"))
    await _until(lambda: len(done) == 5)
    assert sorted(done) == [f"new-{i}" for i in range(5)]  # not behind the slow stop
    assert workers.busy("slow") and workers.running("slow") == "stop"
    assert not workers.busy("new-0")
    assert workers.busy_uids() == {"slow"}
    release.set()
    await _until(lambda: len(done) == 7)
    assert done[5:] == ["slow-stop", "slow-start"]  # in the order submitted
    await workers.stop()


async def test_a_failed_job_leaves_the_worker_working(caplog):
    workers = PodWorkers(idle_seconds=5)
    done = []

    async def boom() -> None:
        raise RuntimeError("podman said no")

    async def ok() -> None:
        done.append(1)
    workers.submit("p", "start", boom)
    workers.submit("p", "act", ok)
    await _until(lambda: done == [1])
    assert "podman said no" in caplog.text
    await workers.stop()


async def test_a_duplicate_of_a_waiting_job_is_dropped():
    workers = PodWorkers(idle_seconds=5)
    release = asyncio.Event()
    runs = []

    async def hold() -> None:
        await release.wait()

    async def stop() -> None:
        runs.append("stop")
    assert workers.submit("p", "start", hold)
    assert workers.submit("p", "stop", stop)
    assert not workers.submit("p", "stop", stop)  # one waits already
    release.set()
    await _until(lambda: not workers.busy("p"))
    assert runs == ["stop"]
    assert workers.submit("p", "stop", stop)  # none waits now
    await _until(lambda: runs == ["stop", "stop"])
    await workers.stop()


async def test_idle_workers_are_collected_and_come_back():
    # idle for a second: a loaded machine's poll still sees the workers before they go
    workers = PodWorkers(idle_seconds=1.0)
    runs = []

    async def job() -> None:
        runs.append(1)
    for i in range(20):
        workers.submit(f"p{i}", "start", job)
    await _until(lambda: len(runs) == 20)
    assert len(workers) == 20
    await _until(lambda: len(workers) == 0, timeout=10.0)
    workers.submit("p0", "act", job)
    await _until(lambda: len(runs) == 21)
    assert len(workers) == 1
    await workers.stop()
    assert len(workers) == 0


async def test_stop_cancels_running_jobs():
    workers = PodWorkers(idle_seconds=5)
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
    workers.submit("p", "stop", forever)
    await _until(lambda: workers.running("p") == "stop")
    await workers.stop()
    assert cancelled.is_set()
    assert not workers.busy("p")
