"""What the agent knows of one pod it runs, in one record: the pod syncer (syncer.py) keeps a
PodRecord per pod uid and drops it when the pod is gone; restarts.py, status.py and the pod's
jobs in its worker (workers.py) read it.

Only `restarts` outlives the agent (<pods_dir>/<uid>/state.json, restarts.py); the rest is
rebuilt from podman and metamanager after a restart."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from k3py.agent.pods.probes import ContainerProbes
from k3py.agent.pods.restarts import PullFailure, RestartState

__all__ = ["PodRecord", "EventCount", "pod_uid"]


def pod_uid(pod: dict) -> str:
    """The uid records are kept by."""
    return (pod.get("metadata") or {}).get("uid") or ""


@dataclass
class EventCount:
    """One Event as the kubelet's recorder aggregates it: repeats raise `count`."""

    name: str
    first: float
    count: int = 0
    sent: float = 0.0


@dataclass
class PodRecord:
    # the status last sent up (sent again only when it changes)
    sent_status: dict | None = None
    # why the podman pod could not be created: (waiting reason, message)
    error: tuple[str, str] | None = None
    # the pod's start (sandbox) failed this many times; not retried before retry_at
    start_failures: int = 0
    retry_at: float = 0.0  # time.monotonic()
    volume_wait: bool = False  # the start waits for a claim's volume (retried on its arrival)
    # wall clock before the inspect that followed our last start: older events are known
    started_at: float = 0.0
    finalized: bool = False  # its final delete was sent up
    stopping: bool = False  # its stop job is queued or running in its worker
    missed: bool = False  # a podman event came in while its worker had a job
    # container name -> restart count and backoff; None until read from state.json
    restarts: dict[str, RestartState] | None = None
    pulls: dict[str, PullFailure] = field(default_factory=dict)  # failed image pull/create
    timer: tuple[float, asyncio.TimerHandle] | None = None  # wall clock of a backoff's end
    # container name -> (the running instance probed, its probes)
    probes: dict[str, tuple[str, ContainerProbes]] = field(default_factory=dict)
    events: dict[tuple, EventCount] = field(default_factory=dict)  # (container, reason, msg)
    limits_warned: bool = False

    def stop_probes(self) -> None:
        for _, probes in self.probes.values():
            probes.stop()
        self.probes.clear()

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer[1].cancel()
            self.timer = None

    def forget(self, busy: bool) -> PodRecord | None:
        """The pod is no longer desired nor terminating: what is left of the record once its
        state is dropped (what its worker's jobs read while `busy`), or None."""
        self.cancel_timer()
        self.stop_probes()
        if not busy:
            return None
        return PodRecord(stopping=self.stopping, missed=self.missed,
                         limits_warned=self.limits_warned)
