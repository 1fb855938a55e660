"""The pod syncer (edged): makes podman match the desired pods in metamanager and reports
pod status up through edgehub.

Woken by metamanager changes, by `podman events` of our containers (exits, restarts, removals)
and by a rare full resync; adopts podman pods carrying our uid label after a restart, removes the
ones no longer desired, and sends status only when it changes. A pass costs two podman commands
for all pods (`pod ps`, `ps -a`) plus one batched `inspect` of the containers whose state changed
since they were last inspected; a started pod reports its own status right after its start.

The kubelet's container lifecycle is the agent's, not podman's: containers run with
`--restart no` and exits are restarted here per restartPolicy with the crash-loop backoff
(restart counts persisted in <pods_dir>/<uid>/state.json), init containers run one by one
first, failed pulls back off, probes (probes.py) drive readiness and liveness kills, and the
kubelet's Events go up the tunnel. Each pod has at most one task (start, restarts) at a time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from functools import partial

from k3py.agent.lifecycle import (
    make_event,
    next_backoff,
    note_exit,
    podman_limits,
    qos_class,
    should_restart,
)
from k3py.agent.logwindow import last_line_time, parse_ns
from k3py.agent.metamanager import MetaManager
from k3py.agent.podspec import container_specs, prepare_volumes
from k3py.agent.probes import ContainerProbes
from k3py.agent.runtime.libpod import LibpodAPI
from k3py.agent.runtime.podman import (
    LABEL_CONTAINER,
    LABEL_UID,
    RuntimeError_,
    container_name_for,
)
from k3py.agent.tasks import cancel_and_wait
from k3py.tunnel.message import (
    EDGE,
    GROUP_RESOURCE,
    OP_DELETE,
    OP_INSERT,
    OP_UPDATE,
    new_message,
    resource_key,
)

__all__ = ["PodSyncer", "phase_of"]

log = logging.getLogger("k3py.pods")

RESYNC_SECONDS = 30.0          # full pass while `podman events` is followed
FALLBACK_RESYNC_SECONDS = 5.0  # full pass while it cannot be
EVENT_MIN_INTERVAL = 1.0       # at most one event-driven pass a second (crash loops)
EVENT_REPEAT_INTERVAL = 5.0  # a repeated Event goes up (with its count) at most this often
PULL_BACKOFF_INITIAL, PULL_BACKOFF_MAX = 10.0, 300.0
_WAKE_EVENTS = {"died", "start", "remove"}


def _uid(pod: dict) -> str:
    return (pod.get("metadata") or {}).get("uid") or ""


def _state(c: dict) -> tuple[dict, bool]:
    st = c.get("State") or {}
    status = (st.get("Status") or "").lower()
    if status == "running":
        return {"running": {"startedAt": _ts(st.get("StartedAt"))}}, True
    if status in ("exited", "stopped"):
        return {"terminated": _terminated(c)}, False
    return {"waiting": {"reason": "ContainerCreating"}}, False


def _terminated(c: dict) -> dict:
    st = c.get("State") or {}
    code = st.get("ExitCode", 0) or 0
    reason = "OOMKilled" if st.get("OOMKilled") else ("Completed" if code == 0 else "Error")
    return {"exitCode": code, "reason": reason, "startedAt": _ts(st.get("StartedAt")),
            "finishedAt": _ts(st.get("FinishedAt")), "containerID": f"podman://{c.get('Id')}"}


def _exited(c: dict | None) -> bool:
    return c is not None and \
        str((c.get("State") or {}).get("Status") or "").lower() in ("exited", "stopped")


def _running(c: dict | None) -> bool:
    return c is not None and str((c.get("State") or {}).get("Status") or "").lower() == "running"


def _cname(c: dict) -> str | None:
    return ((c.get("Config") or {}).get("Labels") or {}).get(LABEL_CONTAINER)


def _ts(value) -> str | None:
    if not value or str(value).startswith("0001"):
        return None
    # podman: 2024-01-01T10:00:00.123456789Z or with offset; Kubernetes wants seconds + Z
    s = str(value)
    return s[:19] + "Z" if len(s) >= 19 else s


def phase_of(restart_policy: str, states: list[dict]) -> str:
    if not states:
        return "Pending"
    if any("running" in s for s in states):
        return "Running"
    if all("terminated" in s for s in states):
        codes = [s["terminated"]["exitCode"] for s in states]
        if restart_policy == "Never" or (restart_policy == "OnFailure"
                                         and all(c == 0 for c in codes)):
            return "Succeeded" if all(c == 0 for c in codes) else "Failed"
        return "Running"  # the agent restarts them
    return "Pending"


def _unix(value) -> float | None:
    """podman time (RFC 3339 with nanoseconds) -> unix time."""
    ns = parse_ns(str(value or ""))
    return None if ns is None else ns / 1e9


def _epoch(value) -> int | None:
    """podman inspect time -> whole unix seconds, as `podman ps` gives them."""
    ns = parse_ns(str(value or ""))
    return None if ns is None else ns // 1_000_000_000


def _ps_sig(c: dict) -> tuple:
    """What `podman ps -a` tells of a container's state; a change means inspect it again."""
    return (str(c.get("State") or "").lower(), c.get("StartedAt"), c.get("ExitedAt"),
            c.get("ExitCode"))


def _inspect_sig(c: dict) -> tuple:
    """_ps_sig computed from a `podman inspect` of the container."""
    st = c.get("State") or {}
    return (str(st.get("Status") or "").lower(), _epoch(st.get("StartedAt")),
            _epoch(st.get("FinishedAt")), st.get("ExitCode"))


def _grace(pod: dict) -> int:
    md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    grace = md.get("deletionGracePeriodSeconds")
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds", 30)
    try:
        return max(0, int(grace))
    except (TypeError, ValueError):
        return 30


class PodSyncer:
    def __init__(self, *, meta: MetaManager, runtime: LibpodAPI, send, data_dir: str,
                 node_name: str, host_ip: str) -> None:
        self.meta = meta
        self.runtime = runtime
        self.send = send  # async (Message) -> None: reliable up message (edgehub.send)
        self.pods_dir = os.path.join(data_dir, "agent", "pods")
        self.node_name = node_name
        self.host_ip = host_ip
        self._sent_status: dict[str, dict] = {}
        self._errors: dict[str, tuple[str, str]] = {}  # uid -> (reason, message)
        self._task: asyncio.Task | None = None
        self._events_task: asyncio.Task | None = None
        self._events_ok = False  # `podman events` is being followed
        self._last_event_wake = 0.0
        self._wake_handle: asyncio.TimerHandle | None = None
        # wall clock before the last pass's listing / a start's inspect: events older than
        # that are already reflected in what was reported
        self._synced_at = 0.0
        self._started_at: dict[str, float] = {}  # uid -> wall clock before its inspect
        # uids with a podman pod at the last listing, or started since: a desired pod outside
        # this set (once a listing was made) is new and starts before the pass lists podman
        self._present: set[str] | None = None
        self._known_desired: set[str] = set()  # desired uids at the end of the last pass
        self._dirty = False  # something happened in podman: the next pass lists it
        self._removing: dict[str, asyncio.Task] = {}  # uid -> podman stop/rm in progress
        # uid -> sandbox/container creation, restarts in progress (one task per pod at a time)
        self._starting: dict[str, asyncio.Task] = {}
        self._missed: set[str] = set()  # uids with a podman event while their task ran
        self._retry: dict[str, tuple[int, float]] = {}  # uid -> (failures, not before)
        self._finalized: set[str] = set()  # uids whose final delete was sent up
        # container id -> (_ps_sig when inspected, podman inspect); refreshed when ps differs
        self._inspected: dict[str, tuple[tuple, dict]] = {}
        # uid -> {"containers": {name: {restarts, backoff, delay, due, exit, last}}}: what
        # survives an agent restart (<pods_dir>/<uid>/state.json)
        self._cstates: dict[str, dict] = {}
        self._pull: dict[str, dict[str, dict]] = {}  # uid -> name -> failed image pull/create
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}  # uid -> backoff wake
        self._probes: dict[tuple[str, str], tuple[str, ContainerProbes]] = {}
        self._ev: dict[tuple, dict] = {}  # (uid, container, reason, message) -> aggregate
        self._limits_warned: set[str] = set()
        self._bg: set[asyncio.Task] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="pod-syncer")
        self._events_task = asyncio.create_task(self._follow_events(), name="pod-events")

    async def stop(self) -> None:
        if self._wake_handle is not None:
            self._wake_handle.cancel()
        for _, handle in self._timers.values():
            handle.cancel()
        for _, probes in self._probes.values():
            probes.stop()
        for task in (self._events_task, self._task):
            await cancel_and_wait(task)
        for task in [*self._removing.values(), *self._starting.values(), *self._bg]:
            task.cancel()

    def _wake(self) -> None:
        """Run a full pass (listing podman) now, not just the new pods' starts."""
        self._dirty = True
        self.meta.changed.set()

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def _wake_at(self, uid: str, at: float) -> None:
        """A full pass at wall-clock time `at` (a backoff ends); one timer per pod, the
        earliest wins (the pass it causes schedules the later ones again)."""
        now = time.time()
        cur = self._timers.get(uid)
        if cur is not None and now < cur[0] <= at:
            return
        if cur is not None:
            cur[1].cancel()

        def fire() -> None:
            self._timers.pop(uid, None)
            self._wake()
        handle = asyncio.get_running_loop().call_later(max(0.0, at - now) + 0.05, fire)
        self._timers[uid] = (at, handle)

    async def _loop(self) -> None:
        next_full = 0.0
        while True:
            self.meta.changed.clear()
            full = self._dirty or time.monotonic() >= next_full
            self._dirty = False
            try:
                listed = await self.sync_once(full=full)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep syncing; podman may come back
                log.exception("pod sync failed")
                listed = True
            now = time.monotonic()
            if listed:
                next_full = now + (RESYNC_SECONDS if self._events_ok else FALLBACK_RESYNC_SECONDS)
            timeout = next_full - now
            for uid, (_, not_before) in list(self._retry.items()):
                if not_before > now and uid not in self._starting:
                    timeout = min(timeout, not_before - now + 0.05)  # the backoff retry
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.meta.changed.wait(), max(0.0, timeout))
                continue
            self._dirty = True  # the resync or a backoff retry is due

    async def _follow_events(self) -> None:
        """Wake the syncer when one of our containers dies, (re)starts or is removed; the
        periodic resync covers whatever this misses (and all of it while podman is away)."""
        backoff, first = 1.0, True
        while True:
            t0 = time.monotonic()
            try:
                self._events_ok = True
                if not first:
                    self._wake()  # events may have been missed meanwhile
                first = False
                async for ev in self.runtime.events():
                    self._on_event(ev)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - retried with backoff
                log.debug("podman events: %s", e)
            self._events_ok = False
            if time.monotonic() - t0 > 60:
                backoff = 1.0
            await asyncio.sleep(backoff)
            backoff = min(60.0, backoff * 2)

    def _on_event(self, ev: dict) -> None:
        if ev.get("Status") not in _WAKE_EVENTS:
            return
        uid = (ev.get("Attributes") or {}).get(LABEL_UID) or ""
        if uid in self._removing:
            return  # it wakes when it ends
        at = _unix(ev.get("Time"))
        if at is not None and at < max(self._synced_at, self._started_at.get(uid, 0.0)):
            return  # e.g. our own start: seen by the inspect or listing that came after it
        if uid in self._starting:
            self._missed.add(uid)  # its task wakes a pass when it ends
            return
        if self._wake_handle is not None:
            return  # a wake is already due: events in a burst share it
        delay = max(0.0, self._last_event_wake + EVENT_MIN_INTERVAL - time.monotonic())
        self._wake_handle = asyncio.get_running_loop().call_later(delay, self._event_wake)

    def _event_wake(self) -> None:
        self._wake_handle = None
        self._last_event_wake = time.monotonic()
        self._wake()

    async def sync_once(self, full: bool = True) -> bool:
        """One pass; returns whether it listed podman. Without `full`, a pass for a metadata
        change that only added pods starts them and lists nothing (podman did not change:
        events or the start's own report say when it does)."""
        desired: dict[str, dict] = {}
        terminating: dict[str, dict] = {}
        for p in self.meta.pods():
            if _uid(p):
                deleting = (p.get("metadata") or {}).get("deletionTimestamp")
                (terminating if deleting else desired)[_uid(p)] = p
        if self._present is not None:
            for uid, pod in desired.items():
                if uid not in self._present and uid not in self._retry:
                    await self._launch(uid, pod)  # new: no need to wait for the listing
            if not full and all(u in desired for u in self._known_desired) and \
                    all(u in self._finalized for u in terminating):
                self._known_desired = set(desired)
                return False
        # snapshot before listing: a start finishing during the listing must not look absent
        busy = set(self._removing) | set(self._starting)
        listed_at = time.time()
        actual = await self.runtime.list_pods()
        self._present = set(actual) | busy
        by_pod = await self._containers_by_pod()
        self._synced_at = listed_at
        for uid, info in actual.items():
            if uid not in desired and uid not in busy:
                pod = terminating.get(uid)
                grace = _grace(pod) if pod is not None else 2
                log.info("stopping pod %s (%s, grace %ss)", info.get("Name"),
                         "deleted" if pod is not None else "no longer desired", grace)
                self._stop_probes(uid)
                if pod is not None:
                    for c in (pod.get("spec") or {}).get("containers") or []:
                        self._event(pod, "Killing", f"Stopping container {c['name']}",
                                    container=c["name"])
                self._removing[uid] = asyncio.create_task(self._remove(uid, info["Id"], grace))
        for uid, pod in terminating.items():
            # stopped (or never started here): let the server delete the object for good
            if uid not in actual and uid not in busy and uid not in self._finalized:
                await self._finalize(pod)
        for uid, pod in desired.items():
            if uid not in actual and uid not in busy:
                await self._launch(uid, pod)
        for uid, pod in desired.items():
            # a starting pod reports itself when its start ends: a status computed here could
            # be older than that report and would overwrite it
            if uid not in busy and uid not in self._starting:
                info = actual.get(uid)
                if info is None:
                    self._stop_probes(uid)
                    await self._report(pod, None, [])
                    continue
                containers = by_pod.get(info.get("Id"), [])
                if uid in self._pull:
                    await self._image_appeared(pod)
                actions = self._plan(pod, containers)[0]
                if actions:  # (re)start containers: the task reports when done
                    self._starting[uid] = asyncio.create_task(
                        self._act(pod, info.get("Id"), info.get("Created"), actions))
                else:
                    await self._report(pod, info.get("Created"), containers)
        self._known_desired = set(desired)
        known = set(desired) | set(terminating)
        self._finalized &= known
        for d in (self._sent_status, self._retry, self._errors, self._started_at,
                  self._cstates, self._pull):
            for uid in [u for u in d if u not in known]:
                d.pop(uid, None)
        for uid in [u for u in self._timers if u not in known]:
            self._timers.pop(uid)[1].cancel()
        for uid in {u for u, _ in self._probes if u not in desired}:
            self._stop_probes(uid)
        for key in [k for k in self._ev if k[0] not in known]:
            self._ev.pop(key, None)
        return True

    async def _launch(self, uid: str, pod: dict) -> None:
        """Start the pod in its own task (a slow image pull must not hold up other pods),
        unless it is starting or being removed, or its backoff after a failure runs."""
        if uid in self._starting or uid in self._removing or \
                self._retry.get(uid, (0, 0.0))[1] > time.monotonic():
            return
        await self._report(pod, None, [])  # Pending/ContainerCreating, before the start
        self._starting[uid] = asyncio.create_task(self._start(pod))

    async def _containers_by_pod(self) -> dict[str, list[dict]]:
        """podman pod id -> [container inspect] (infra included) for all our pods: one
        `podman ps -a`, and one `podman inspect` of just the containers that changed."""
        sigs = {c["Id"]: _ps_sig(c) for c in await self.runtime.list_containers()
                if c.get("Id")}
        for cid in [cid for cid in self._inspected if cid not in sigs]:
            self._inspected.pop(cid, None)
        stale = [cid for cid, sig in sigs.items()
                 if cid not in self._inspected or self._inspected[cid][0] != sig]
        if stale:
            for c in await self.runtime.inspect(*stale):
                if c.get("Id") in sigs:
                    self._inspected[c["Id"]] = (sigs[c["Id"]], c)
        by_pod: dict[str, list[dict]] = {}
        for cid in sigs:
            entry = self._inspected.get(cid)
            if entry is not None:
                by_pod.setdefault(entry[1].get("Pod") or "", []).append(entry[1])
        return by_pod

    async def _remove(self, uid: str, pod_id: str, grace: int) -> None:
        try:
            await self.runtime.remove_pod(pod_id, grace=grace)
            self._cstates.pop(uid, None)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(shutil.rmtree, os.path.join(self.pods_dir, uid))
        except Exception:  # noqa: BLE001 - the next sync retries
            log.exception("removing pod %s failed", pod_id)
        finally:
            self._removing.pop(uid, None)
            self._wake()  # finalize now rather than at the next resync

    async def _finalize(self, pod: dict) -> None:
        """The containers are gone: ask the server to delete the pod object (grace 0)."""
        md = pod["metadata"]
        self._finalized.add(_uid(pod))
        self._errors.pop(_uid(pod), None)
        key = resource_key("pods", md["namespace"], md["name"])
        log.info("pod %s/%s terminated; deleting it", md["namespace"], md["name"])
        await self.send(new_message(source=EDGE, group=GROUP_RESOURCE, operation=OP_DELETE,
                                    resource=key, key=key + "/delete",
                                    content={"uid": _uid(pod)}))

    # ---------------------------------------------------------------- starts and restarts

    async def _start(self, pod: dict) -> None:
        """A new pod: its volumes and podman pod, then what _plan says first (the first
        init container, or all app containers), and its status right away."""
        uid = _uid(pod)
        created: str | None = None
        containers: list[dict] = []
        ok = False
        try:
            vols = await asyncio.to_thread(prepare_volumes, pod, self.meta,
                                           os.path.join(self.pods_dir, uid, "volumes"))
            name = await self.runtime.create_sandbox(pod)
            ok = True
            if self._present is not None:
                self._present.add(uid)
            self._errors.pop(uid, None)
            self._retry.pop(uid, None)
            actions = self._plan(pod, [])[0]
            await self._do(pod, actions, vols)
            log.info("started pod %s/%s", pod["metadata"]["namespace"], pod["metadata"]["name"])
            # one inspect of this pod and its containers: its status goes up now
            self._started_at[uid] = time.time()
            items = await self.runtime.inspect(name, *self._container_names(pod))
            for item in items:
                if isinstance(item.get("State"), dict):  # a container (a pod's is a string)
                    containers.append(item)
                    self._inspected[item["Id"]] = (_inspect_sig(item), item)
                else:
                    created = item.get("Created")
        except Exception as e:  # noqa: BLE001 - retried with backoff
            if ok:
                log.warning("starting containers of pod %s failed: %s", uid, e)
            elif isinstance(e, RuntimeError_):
                self._errors[uid] = (e.reason, str(e))
                log.warning("pod %s/%s: %s", pod["metadata"]["namespace"],
                            pod["metadata"]["name"], e)
            else:
                log.exception("starting pod %s/%s failed", pod["metadata"]["namespace"],
                              pod["metadata"]["name"])
            if not ok:
                n = self._retry.get(uid, (0, 0.0))[0] + 1
                self._retry[uid] = (n, time.monotonic() + min(60.0, 2.0 ** n))
        finally:
            try:  # report the outcome now, not on the next full pass
                await self._report(pod, created, containers)
            except Exception:  # noqa: BLE001 - the next pass reports it
                log.exception("reporting pod %s failed", uid)
            finally:
                self._starting.pop(uid, None)
                settled = containers and all(_running(c) for c in containers) and \
                    not (pod.get("spec") or {}).get("initContainers")
                if not ok or not settled or uid in self._missed:
                    self._wake()  # schedule the retry / find the real state / next step
                self._missed.discard(uid)

    async def _act(self, pod: dict, pod_id: str, created: str | None, actions: list) -> None:
        """Run a present pod's pending actions (restarts, next init container, app
        containers), then report its status from a fresh inspect."""
        uid = _uid(pod)
        try:
            vols = None
            if any(a[0] == "run" for a in actions):
                vols = await asyncio.to_thread(prepare_volumes, pod, self.meta,
                                               os.path.join(self.pods_dir, uid, "volumes"))
            await self._do(pod, actions, vols or {})
            self._started_at[uid] = time.time()
            fresh = {c["Id"]: c for c in await self.runtime.inspect(*self._container_names(pod))
                     if isinstance(c.get("State"), dict)}
            for c in fresh.values():
                self._inspected[c["Id"]] = (_inspect_sig(c), c)
            containers = list(fresh.values()) + [
                c for _, c in self._inspected.values()
                if c.get("Pod") == pod_id and c["Id"] not in fresh and c.get("IsInfra")]
            await self._report(pod, created, containers)
        except Exception:  # noqa: BLE001 - the next pass retries
            log.exception("pod %s/%s: acting failed", pod["metadata"]["namespace"],
                          pod["metadata"]["name"])
        finally:
            self._starting.pop(uid, None)
            self._missed.discard(uid)
            self._wake()

    def _container_names(self, pod: dict) -> list[str]:
        spec = pod.get("spec") or {}
        return [container_name_for(pod, c["name"])
                for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]]

    async def _do(self, pod: dict, actions: list, vols: dict[str, str]) -> None:
        for action in actions:
            if action[0] == "run":
                await self._run_container(pod, action[1], action[2], vols)
            else:
                await self._restart_container(pod, action[1], action[2], action[3])

    async def _run_container(self, pod: dict, name: str, key: str, vols: dict[str, str]
                             ) -> None:
        """Pull (per imagePullPolicy) and run one container; a failure is remembered with
        its backoff (ErrImagePull → ImagePullBackOff) rather than raised."""
        uid, init = _uid(pod), key == "initContainers"
        spec_c = next(c for c in (pod.get("spec") or {}).get(key) or [] if c["name"] == name)
        rc = next(c for c in container_specs(pod, self.meta, vols, self.host_ip, key=key)
                  if c["name"] == name)
        image = rc["image"]
        try:
            outcome = await self.runtime.ensure_image(image, rc["pullPolicy"])
        except RuntimeError_ as e:
            if e.reason == "ErrImagePull":
                self._event(pod, "Pulling", f'Pulling image "{image}"', container=name,
                            init=init)
                self._event(pod, "Failed", f'Failed to pull image "{image}": {e}',
                            "Warning", name, init)
            else:
                self._event(pod, "Failed", str(e), "Warning", name, init)
            self._event(pod, "Failed", f"Error: {e.reason}", "Warning", name, init)
            self._failed(pod, name, e)
            return
        if outcome == "pulled":
            self._event(pod, "Pulling", f'Pulling image "{image}"', container=name, init=init)
            self._event(pod, "Pulled", f'Successfully pulled image "{image}"', container=name,
                        init=init)
        else:
            self._event(pod, "Pulled", f'Container image "{image}" already present on machine',
                        container=name, init=init)
        try:
            limited = await self.runtime.run_container(
                pod, rc, limits=podman_limits(spec_c), grace=_grace(pod))
        except RuntimeError_ as e:
            self._event(pod, "Failed", f"Error: {e}", "Warning", name, init)
            self._failed(pod, name, e)
            return
        if not limited and uid not in self._limits_warned:
            self._limits_warned.add(uid)
            log.warning("pod %s/%s: podman refused the resource limits here (cgroups?); "
                        "its containers run without them", pod["metadata"]["namespace"],
                        pod["metadata"]["name"])
        self._pull.get(uid, {}).pop(name, None)
        self._event(pod, "Created", f"Created container {name}", container=name, init=init)
        self._event(pod, "Started", f"Started container {name}", container=name, init=init)

    def _failed(self, pod: dict, name: str, e: RuntimeError_) -> None:
        uid, now = _uid(pod), time.time()
        entry = self._pull.setdefault(uid, {}).setdefault(name, {"fails": 0})
        entry["fails"] += 1
        delay = min(PULL_BACKOFF_MAX, PULL_BACKOFF_INITIAL * 2 ** (entry["fails"] - 1))
        entry.update(at=now, due=now + delay, reason=e.reason, message=str(e))
        log.warning("pod %s/%s container %s: %s", pod["metadata"]["namespace"],
                    pod["metadata"]["name"], name, e)

    async def _image_appeared(self, pod: dict) -> None:
        """A full pass ends the pull backoff of images that appeared meanwhile (e.g. `k3py
        airgap import`, `podman load`): retried now rather than up to 5 min later."""
        spec = pod.get("spec") or {}
        images = {c["name"]: c.get("image") or "" for c in
                  [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]}
        now = time.time()
        for name, entry in (self._pull.get(_uid(pod)) or {}).items():
            if entry["reason"] in ("ErrImagePull", "ErrImageNeverPull") and \
                    entry["due"] > now and images.get(name) and \
                    await self.runtime.image_exists(images[name]):
                entry["due"] = now

    async def _restart_container(self, pod: dict, name: str, init: bool, c: dict) -> None:
        """Start an exited container again (its backoff is over): counted and persisted."""
        uid = _uid(pod)
        entry = self._centry(uid, name)
        entry["restarts"] = int(entry.get("restarts") or 0) + 1
        entry["last"] = _terminated(c)
        entry["backoff"] = next_backoff(float(entry.get("delay") or 0.0))
        cname = container_name_for(pod, name)
        await self._mark_log(entry, cname)
        self._save(uid)
        try:
            await self.runtime.start_container(cname)
        except RuntimeError_ as e:
            log.warning("restarting %s of pod %s failed: %s", name, uid, e)
            return
        self._event(pod, "Created", f"Created container {name}", container=name, init=init)
        self._event(pod, "Started", f"Started container {name}", container=name, init=init)

    async def _mark_log(self, entry: dict, cname: str) -> None:
        """Before a restart: where the ended run's log stops (see agent/logwindow.py), so
        `kubectl logs` shows the current run only and `--previous` the one before."""
        out = b""
        try:
            async for chunk in self.runtime.logs(cname, tail=1, timestamps=True):
                out += chunk
        except OSError as e:
            log.warning("reading the log end of %s: %s", cname, e)
        marks = entry.get("logs") or {}
        last = last_line_time(out) or marks.get("cur")
        entry["logs"] = {"prev": marks.get("cur"), "cur": last}

    # ---------------------------------------------------------------- the plan

    def _plan(self, pod: dict, containers: list[dict]) -> tuple[list, dict, bool, bool]:
        """What the pod needs now, from its containers' inspects: (actions, waiting states
        by container, failed, initialized). Actions: ("run", name, key) for a container to
        create, ("restart", name, init, inspect) for an exited one whose backoff is over.
        Init containers run one at a time, in order, before any app container."""
        spec = pod.get("spec") or {}
        policy = spec.get("restartPolicy") or "Always"
        by_name = {_cname(c): c for c in containers if _cname(c)}
        now = time.time()
        actions: list = []
        waiting: dict[str, dict] = {}
        failed = False
        initialized = True
        for ic in spec.get("initContainers") or []:
            name = ic["name"]
            c = by_name.get(name)
            if c is None:
                self._plan_missing(pod, ic, "initContainers", now, actions, waiting)
            elif _exited(c):
                if (c.get("State") or {}).get("ExitCode", 0) == 0:
                    continue
                if policy == "Never":
                    failed = True
                else:
                    self._plan_crashed(pod, name, True, c, now, actions, waiting)
            initialized = False
            break
        if initialized:
            for ac in spec.get("containers") or []:
                name = ac["name"]
                c = by_name.get(name)
                if c is None:
                    self._plan_missing(pod, ac, "containers", now, actions, waiting)
                elif _exited(c) and should_restart(
                        policy, (c.get("State") or {}).get("ExitCode", 0) or 0, False):
                    self._plan_crashed(pod, name, False, c, now, actions, waiting)
        return actions, waiting, failed, initialized

    def _plan_missing(self, pod: dict, spec_c: dict, key: str, now: float, actions: list,
                      waiting: dict) -> None:
        name = spec_c["name"]
        entry = self._pull.get(_uid(pod), {}).get(name)
        if entry is None or now >= entry["due"]:
            actions.append(("run", name, key))
            return
        # right after a failed pull: ErrImagePull; later in its backoff: ImagePullBackOff
        switch = entry["at"] + (entry["due"] - entry["at"]) / 2
        if entry["reason"] == "ErrImagePull" and now >= switch:
            waiting[name] = {"reason": "ImagePullBackOff",
                             "message": f'Back-off pulling image "{spec_c.get("image")}"'}
        else:
            waiting[name] = {"reason": entry["reason"], "message": entry["message"]}
            if entry["reason"] == "ErrImagePull":
                self._wake_at(_uid(pod), switch)
        self._wake_at(_uid(pod), entry["due"])

    def _plan_crashed(self, pod: dict, name: str, init: bool, c: dict, now: float,
                      actions: list, waiting: dict) -> None:
        uid = _uid(pod)
        entry = self._centry(uid, name)
        st = c.get("State") or {}
        before = entry.get("exit")
        note_exit(entry, f"{st.get('StartedAt')}/{st.get('FinishedAt')}",
                  _unix(st.get("StartedAt")), _unix(st.get("FinishedAt")), now)
        if entry["exit"] != before:
            self._save(uid)
            if entry["delay"] > 0:
                md = pod["metadata"]
                self._event(pod, "BackOff", f"Back-off restarting failed container {name} in "
                            f"pod {md['name']}_{md['namespace']}({uid})", "Warning", name, init)
        if now >= entry["due"]:
            actions.append(("restart", name, init, c))
            return
        md = pod["metadata"]
        waiting[name] = {"reason": "CrashLoopBackOff",
                         "message": f"back-off {int(entry['delay'])}s restarting failed "
                                    f"container={name} pod={md['name']}_{md['namespace']}({uid})"}
        self._wake_at(uid, entry["due"])

    def _centry(self, uid: str, name: str) -> dict:
        st = self._cstates.get(uid)
        if st is None:
            st = {"containers": {}}
            with contextlib.suppress(OSError, ValueError):
                with open(os.path.join(self.pods_dir, uid, "state.json")) as f:
                    loaded = json.load(f)
                if isinstance(loaded, dict) and isinstance(loaded.get("containers"), dict):
                    st = loaded
            self._cstates[uid] = st
        return st["containers"].setdefault(name, {"restarts": 0, "backoff": 0.0})

    def _save(self, uid: str) -> None:
        """Persist restart counts and backoff so an agent restart does not reset them."""
        st = self._cstates.get(uid)
        if st is None:
            return
        path = os.path.join(self.pods_dir, uid, "state.json")
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump(st, f)
            os.replace(path + ".tmp", path)
        except OSError as e:
            log.warning("saving container state of pod %s: %s", uid, e)

    # ---------------------------------------------------------------- probes and events

    def _sync_probes(self, pod: dict, by_name: dict[str, dict], pod_ip: str) -> None:
        """One ContainerProbes per running container instance that has probes."""
        uid = _uid(pod)
        for spec_c in (pod.get("spec") or {}).get("containers") or []:
            if not any(spec_c.get(k) for k in ("startupProbe", "livenessProbe",
                                                "readinessProbe")):
                continue
            name = spec_c["name"]
            c = by_name.get(name)
            cur = self._probes.get((uid, name))
            inst = f"{c.get('Id')}/{(c.get('State') or {}).get('StartedAt')}" if c else ""
            if _running(c) and (cur is None or cur[0] != inst):
                if cur is not None:
                    cur[1].stop()
                probes = ContainerProbes(
                    spec_c, host=pod_ip or self.host_ip,
                    exec_fn=partial(self.runtime.exec_check, container_name_for(pod, name)),
                    on_change=self._wake,
                    on_unhealthy=partial(self._unhealthy, pod, name),
                    on_kill=partial(self._kill, pod, name, spec_c))
                probes.start()
                self._probes[(uid, name)] = (inst, probes)
            elif not _running(c) and cur is not None:
                cur[1].stop()
                self._probes.pop((uid, name), None)

    def _stop_probes(self, uid: str) -> None:
        for key in [k for k in self._probes if k[0] == uid]:
            self._probes.pop(key)[1].stop()

    def _unhealthy(self, pod: dict, name: str, kind: str, message: str) -> None:
        self._event(pod, "Unhealthy", message, "Warning", name)

    def _kill(self, pod: dict, name: str, spec_c: dict, message: str) -> None:
        """Liveness/startup gave up: SIGTERM, SIGKILL after the grace period; the exit is
        then restarted (or not) like any other."""
        self._event(pod, "Killing", message, container=name)
        grace = _grace(pod)
        for kind in ("livenessProbe", "startupProbe"):
            g = (spec_c.get(kind) or {}).get("terminationGracePeriodSeconds")
            if isinstance(g, int) and g >= 0:
                grace = g

        async def stop() -> None:
            await self.runtime.stop_container(container_name_for(pod, name), grace)
            self._wake()
        self._spawn(stop())

    def _event(self, pod: dict, reason: str, message: str, type_: str = "Normal",
               container: str | None = None, init: bool = False) -> None:
        """Send an Event up like the kubelet's recorder: repeats of the same one update its
        count, going up at most every EVENT_REPEAT_INTERVAL seconds."""
        md = pod.get("metadata") or {}
        key = (_uid(pod), container, reason, message)
        now = time.time()
        agg = self._ev.get(key)
        if agg is None:
            if len(self._ev) > 10000:
                self._ev.clear()
            agg = self._ev[key] = {"name": f"{md.get('name')}.{uuid.uuid4().hex[:16]}",
                                   "count": 0, "first": now, "sent": 0.0}
        agg["count"] += 1
        if agg["count"] > 1 and now - agg["sent"] < EVENT_REPEAT_INTERVAL:
            return
        agg["sent"] = now
        ev = make_event(pod, name=agg["name"], reason=reason, message=message, type_=type_,
                        container=container, init=init, node=self.node_name,
                        count=agg["count"], first=agg["first"], last=now)
        res = resource_key("events", md.get("namespace") or "default", agg["name"])
        self._spawn(self.send(new_message(source=EDGE, group=GROUP_RESOURCE,
                                          operation=OP_INSERT, resource=res, key=res,
                                          content=ev)))

    # ---------------------------------------------------------------- status

    async def _report(self, pod: dict, created: str | None, containers: list[dict]) -> None:
        status = self.status_of(pod, created, containers)
        uid = _uid(pod)
        if self._sent_status.get(uid) == status:
            return
        self._sent_status[uid] = status
        md = pod["metadata"]
        key = resource_key("pods", md["namespace"], md["name"], "status")
        await self.send(new_message(source=EDGE, group=GROUP_RESOURCE, operation=OP_UPDATE,
                                    resource=key, key=key,
                                    content={"uid": uid, "status": status}))

    def status_of(self, pod: dict, created: str | None, containers: list[dict]) -> dict:
        """The pod's status from its podman pod's creation time and its containers' inspects
        (the infra container's too, when known: it holds the pod IP), the restart
        bookkeeping and the probes."""
        spec = pod.get("spec") or {}
        uid = _uid(pod)
        by_name: dict[str, dict] = {}
        pod_ip = ""
        for c in sorted(containers, key=lambda c: not c.get("IsInfra")):  # infra first
            cname = _cname(c)
            if cname:
                by_name[cname] = c
            if c.get("IsInfra") or (not pod_ip and cname):
                ip = (c.get("NetworkSettings") or {}).get("IPAddress") or ""
                pod_ip = pod_ip or ip
        if spec.get("hostNetwork"):
            pod_ip = self.host_ip
        if containers:
            self._sync_probes(pod, by_name, pod_ip)
            _, waiting, failed, initialized = self._plan(pod, containers)
        else:
            waiting, failed, initialized = {}, False, not spec.get("initContainers")
        err = self._errors.get(uid)
        for n in by_name:
            self._centry(uid, n)  # loads what an earlier agent saved, on the first report
        saved = (self._cstates.get(uid) or {}).get("containers") or {}

        def one(spec_c: dict, init: bool) -> tuple[dict, dict | None]:
            name = spec_c["name"]
            c = by_name.get(name)
            entry = saved.get(name) or {}
            last = entry.get("last") or None
            ready = started = False
            image_id = cid = ""
            actual = None
            if c is None:
                if name in waiting:
                    state = {"waiting": waiting[name]}
                elif err:
                    state = {"waiting": {"reason": err[0], "message": err[1]}}
                elif not init and not initialized:
                    state = {"waiting": {"reason": "PodInitializing"}}
                else:
                    state = {"waiting": {"reason": "ContainerCreating"}}
            else:
                state, running = _state(c)
                actual = state
                image_id, cid = c.get("Image") or "", f"podman://{c.get('Id')}"
                if name in waiting:
                    last, state = state.get("terminated"), {"waiting": waiting[name]}
                probes = self._probes.get((uid, name))
                started = running and (probes is None or probes[1].started)
                ready = started and (probes is None or probes[1].ready)
                if init:
                    ready = "terminated" in state and state["terminated"]["exitCode"] == 0
                    started = running
            return {"name": name, "state": state, "ready": ready,
                    "restartCount": int(entry.get("restarts") or 0),
                    "image": spec_c.get("image"), "imageID": image_id, "containerID": cid,
                    "started": started,
                    "lastState": {"terminated": last} if last else {}}, actual

        statuses, states = [], []
        for spec_c in spec.get("containers") or []:
            st, actual = one(spec_c, False)
            statuses.append(st)
            if actual is not None:
                states.append(actual)
        init_statuses = [one(ic, True)[0] for ic in spec.get("initContainers") or []]
        if failed:
            phase = "Failed"
        elif not initialized or len(states) < len(statuses):
            phase = "Pending"
        else:
            phase = phase_of(spec.get("restartPolicy") or "Always", states)
        all_ready = bool(statuses) and all(s["ready"] for s in statuses)
        cond = "True" if all_ready else "False"
        status = {"phase": phase, "hostIP": self.host_ip, "podIP": pod_ip or None,
                  "podIPs": [{"ip": pod_ip}] if pod_ip else [],
                  "startTime": _ts(created), "containerStatuses": statuses,
                  "qosClass": qos_class(pod),
                  "conditions": [
                      {"type": "PodScheduled", "status": "True"},
                      {"type": "Initialized", "status": "True" if initialized else "False"},
                      {"type": "ContainersReady", "status": cond},
                      {"type": "Ready", "status": cond}]}
        if init_statuses:
            status["initContainerStatuses"] = init_statuses
        return {k: v for k, v in status.items() if v is not None}

    def log_marks(self, namespace: str, name: str, container: str) -> dict | None:
        """The container's log boundaries recorded at its restarts (None: never restarted)."""
        for pod in self.meta.pods():
            md = pod.get("metadata") or {}
            if md.get("namespace") == namespace and md.get("name") == name:
                return self._centry(_uid(pod), container).get("logs")
        return None

    def container_name(self, namespace: str, name: str, container: str) -> str | None:
        for pod in self.meta.pods():
            md = pod.get("metadata") or {}
            if md.get("namespace") == namespace and md.get("name") == name:
                return container_name_for(pod, container)
        return None
