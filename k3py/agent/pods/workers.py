"""Pod workers, as the kubelet's: one asyncio task per pod uid runs that pod's jobs (its start,
its container runs and restarts, a liveness kill, its stop) one after another, in the order they
were submitted, while different pods' jobs run in parallel; a worker left with nothing to do for
IDLE_SECONDS ends and is dropped (kopf's queueing.py has the same shape).

The pod syncer (syncer.py) decides in its passes what each pod needs and submits it here; this
module does no I/O and knows nothing of pods but their uid, so it is unit-tested on its own."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from k3py.aio import cancel_and_wait

__all__ = ["PodWorkers", "Job", "IDLE_SECONDS"]

log = logging.getLogger("k3py.pods")

IDLE_SECONDS = 10.0  # a worker this long without a job ends (the next job starts another)

Job = Callable[[], Awaitable[None]]


@dataclass
class _Worker:
    """One pod's queue of (kind, job) and the task working through it."""

    jobs: deque[tuple[str, Job]] = field(default_factory=deque)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    current: str | None = None  # kind of the job running


class PodWorkers:
    def __init__(self, *, idle_seconds: float = IDLE_SECONDS) -> None:
        self.idle_seconds = idle_seconds
        self._workers: dict[str, _Worker] = {}

    def submit(self, uid: str, kind: str, job: Job) -> bool:
        """Queue `job` for the pod `uid`, after what it already has; False (and nothing
        queued) when a job of the same kind is already waiting there: that one will see
        the state this one was asked for."""
        w = self._workers.get(uid)
        if w is None:
            w = self._workers[uid] = _Worker()
            w.task = asyncio.create_task(self._work(uid, w), name=f"pod-worker-{uid[:8]}")
        elif any(k == kind for k, _ in w.jobs):
            return False
        w.jobs.append((kind, job))
        w.arrived.set()
        return True

    def busy(self, uid: str) -> bool:
        """A job of the pod runs or waits."""
        w = self._workers.get(uid)
        return w is not None and (w.current is not None or bool(w.jobs))

    def busy_uids(self) -> set[str]:
        return {uid for uid in self._workers if self.busy(uid)}

    def running(self, uid: str) -> str | None:
        """The kind of the pod's job running now, if any."""
        w = self._workers.get(uid)
        return None if w is None else w.current

    def __len__(self) -> int:
        """Workers alive (busy or idle, not yet collected)."""
        return len(self._workers)

    async def stop(self) -> None:
        """Cancel every worker, its running job included, and wait until they have ended."""
        workers, self._workers = list(self._workers.values()), {}
        for w in workers:
            w.jobs.clear()
        await asyncio.gather(*(cancel_and_wait(w.task) for w in workers))

    async def _work(self, uid: str, w: _Worker) -> None:
        while True:
            while w.jobs:
                kind, job = w.jobs.popleft()
                w.current = kind
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - one failed job must not end the worker
                    log.exception("pod %s: %s failed", uid, kind)
                finally:
                    w.current = None
            w.arrived.clear()
            try:
                async with asyncio.timeout(self.idle_seconds):
                    await w.arrived.wait()
            except TimeoutError:
                # no await between this check and the removal: a submit cannot slip in
                if not w.jobs:
                    if self._workers.get(uid) is w:
                        del self._workers[uid]
                    return
