"""The kubelet's restart policy, with no I/O but state.json: which containers of a pod to run or
restart now, which wait (CrashLoopBackOff, ErrImagePull/ImagePullBackOff) and until when.

The pod syncer (syncer.py) calls `plan` with the pod's container inspects and its PodRecord's
restart and pull state, then does what the plan says; status.py shows the plan's waiting states.
The crash-loop backoff is upstream's: the first crash restarts at once, later ones wait 10 s,
20 s, ... 300 s, and a run of 10 min starts it over; a failed pull waits 10 s doubling to 300 s."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import NamedTuple

from k3py.agent.pods.inspects import exited, label_of, unix_time

__all__ = ["BACKOFF_INITIAL", "BACKOFF_MAX", "BACKOFF_RESET", "PULL_BACKOFF_INITIAL",
           "PULL_BACKOFF_MAX", "RestartState", "PullFailure", "Run", "Restart", "Plan",
           "should_restart", "next_backoff", "note_exit", "note_pull_failure", "plan",
           "load_restarts", "save_restarts"]

BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET = 600.0  # a container that ran this long starts its backoff over
PULL_BACKOFF_INITIAL, PULL_BACKOFF_MAX = 10.0, 300.0


@dataclass
class RestartState:
    """One container's restarts, kept in <pods_dir>/<uid>/state.json across agent restarts:
    the count, the backoff the next crash waits, the last exit noted (`exit`, its `delay`
    and when the restart is `due`), the ended run's state (`last`, for lastState) and its
    log boundaries (`logs`, see agent/logwindow.py)."""

    restarts: int = 0
    backoff: float = 0.0
    exit: str | None = None
    delay: float = 0.0
    due: float = 0.0
    last: dict | None = None
    logs: dict | None = None

    @classmethod
    def from_dict(cls, d: object) -> RestartState:
        if not isinstance(d, dict):
            return cls()
        def num(key: str) -> float:
            try:
                return float(d.get(key) or 0.0)
            except (TypeError, ValueError):
                return 0.0
        return cls(restarts=int(num("restarts")), backoff=num("backoff"),
                   exit=d.get("exit") if isinstance(d.get("exit"), str) else None,
                   delay=num("delay"), due=num("due"),
                   last=d.get("last") if isinstance(d.get("last"), dict) else None,
                   logs=d.get("logs") if isinstance(d.get("logs"), dict) else None)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class PullFailure:
    """A container that could not be pulled or created: retried at `due`."""

    reason: str
    message: str
    fails: int = 0
    at: float = 0.0
    due: float = 0.0


class Run(NamedTuple):
    """Create and start a container of spec[key] (containers or initContainers)."""

    name: str
    key: str


class Restart(NamedTuple):
    """Start an exited container again; `inspect` is its ended run."""

    name: str
    init: bool
    inspect: dict


@dataclass
class Plan:
    actions: list[Run | Restart]
    waiting: dict[str, dict]  # container name -> waiting state
    failed: bool  # an init container failed under restartPolicy Never
    initialized: bool  # every init container succeeded
    wake_at: list[float]  # wall-clock times a backoff ends: plan again then
    new_exits: bool  # an exit was noted: save the restart state
    backoffs: list[tuple[str, bool]]  # (container, init) that crashed again and wait


def should_restart(policy: str, exit_code: int, init: bool) -> bool:
    """Whether an exited container is started again under the pod's restartPolicy (init
    containers are re-run until they succeed unless the policy is Never)."""
    if init:
        return policy != "Never" and exit_code != 0
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def next_backoff(delay: float) -> float:
    """The delay before the restart after the one that waited `delay` (0 = none yet)."""
    return min(BACKOFF_MAX, max(BACKOFF_INITIAL, delay * 2))


def note_exit(entry: RestartState, exit_key: str, started: float | None,
              finished: float | None, now: float) -> None:
    """Record a new exit of a container in its persisted `entry` (once per exit): the delay
    before it may be restarted and when that is due."""
    if entry.exit == exit_key:
        return
    finished = finished or now
    if started is not None and finished - started >= BACKOFF_RESET:
        entry.backoff = 0.0
    entry.exit = exit_key
    entry.delay = float(entry.backoff or 0.0)
    entry.due = finished + entry.delay


def note_pull_failure(entry: PullFailure, reason: str, message: str, now: float) -> None:
    """Another failed pull or create of the container: retried 10 s later, doubling."""
    entry.fails += 1
    delay = min(PULL_BACKOFF_MAX, PULL_BACKOFF_INITIAL * 2 ** (entry.fails - 1))
    entry.at, entry.due, entry.reason, entry.message = now, now + delay, reason, message


def plan(pod: dict, containers: list[dict], restarts: dict[str, RestartState],
         pulls: dict[str, PullFailure], now: float | None = None) -> Plan:
    """What the pod needs now, from its containers' inspects. Init containers run one at a
    time, in order, before any app container. Notes new exits in `restarts` (created per
    container as needed)."""
    now = time.time() if now is None else now
    spec = pod.get("spec") or {}
    policy = spec.get("restartPolicy") or "Always"
    by_name = {label_of(c): c for c in containers if label_of(c)}
    md = pod.get("metadata") or {}
    who = f"pod={md.get('name')}_{md.get('namespace')}({md.get('uid')})"
    p = Plan([], {}, False, True, [], False, [])

    def missing(spec_c: dict, key: str) -> None:
        name = spec_c["name"]
        entry = pulls.get(name)
        if entry is None or now >= entry.due:
            p.actions.append(Run(name, key))
            return
        # right after a failed pull: ErrImagePull; later in its backoff: ImagePullBackOff
        switch = entry.at + (entry.due - entry.at) / 2
        if entry.reason == "ErrImagePull" and now >= switch:
            p.waiting[name] = {"reason": "ImagePullBackOff",
                               "message": f'Back-off pulling image "{spec_c.get("image")}"'}
        else:
            p.waiting[name] = {"reason": entry.reason, "message": entry.message}
            if entry.reason == "ErrImagePull":
                p.wake_at.append(switch)
        p.wake_at.append(entry.due)

    def crashed(name: str, init: bool, c: dict) -> None:
        entry = restarts.setdefault(name, RestartState())
        st = c.get("State") or {}
        before = entry.exit
        note_exit(entry, f"{st.get('StartedAt')}/{st.get('FinishedAt')}",
                  unix_time(st.get("StartedAt")), unix_time(st.get("FinishedAt")), now)
        if entry.exit != before:
            p.new_exits = True
            if entry.delay > 0:
                p.backoffs.append((name, init))
        if now >= entry.due:
            p.actions.append(Restart(name, init, c))
            return
        p.waiting[name] = {"reason": "CrashLoopBackOff",
                           "message": f"back-off {int(entry.delay)}s restarting failed "
                                      f"container={name} {who}"}
        p.wake_at.append(entry.due)

    for ic in spec.get("initContainers") or []:
        c = by_name.get(ic["name"])
        if c is None:
            missing(ic, "initContainers")
        elif exited(c):
            if (c.get("State") or {}).get("ExitCode", 0) == 0:
                continue
            if policy == "Never":
                p.failed = True
            else:
                crashed(ic["name"], True, c)
        p.initialized = False
        break
    if p.initialized:
        for ac in spec.get("containers") or []:
            c = by_name.get(ac["name"])
            if c is None:
                missing(ac, "containers")
            elif exited(c) and should_restart(
                    policy, (c.get("State") or {}).get("ExitCode", 0) or 0, False):
                crashed(ac["name"], False, c)
    return p


def load_restarts(pods_dir: str, uid: str) -> dict[str, RestartState]:
    """What an earlier agent saved of the pod's restarts (nothing when unreadable)."""
    try:
        with open(os.path.join(pods_dir, uid, "state.json")) as f:
            loaded = json.load(f)
    except (OSError, ValueError):
        return {}
    containers = loaded.get("containers") if isinstance(loaded, dict) else None
    if not isinstance(containers, dict):
        return {}
    return {name: RestartState.from_dict(d) for name, d in containers.items()}


def save_restarts(pods_dir: str, uid: str, restarts: dict[str, RestartState]) -> None:
    """Write-then-rename <pods_dir>/<uid>/state.json; raises OSError."""
    path = os.path.join(pods_dir, uid, "state.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump({"containers": {n: e.to_dict() for n, e in restarts.items()}}, f)
    os.replace(path + ".tmp", path)
