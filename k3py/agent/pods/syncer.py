"""The pod syncer (edged): makes podman match the desired pods in metamanager and reports pod
status and Events up through edgehub; one PodRecord (record.py) per pod it knows.

A pass reads the desired pods from metamanager, lists podman (all pods, all containers, and an
inspect of just the containers whose state changed), stops what is no longer desired, starts
what is missing, and for each present pod either acts on its restart plan (restarts.py) or
reports its status (status.py) when it changed. Passes are woken by metamanager changes, by
podman events of our containers (exits, starts, removals), by backoff timers and by a rare
full resync; a pass for a metadata change that only added pods starts them without listing.

The kubelet's container lifecycle is the agent's, not podman's: containers run with restart
policy "no", init containers run one by one first, exits are restarted per restartPolicy with
the crash-loop backoff, probes (probes.py) drive readiness and liveness kills. What a pass
decides for a pod (its start, its container runs and restarts, a liveness kill, its stop) runs
in that pod's worker (workers.py): in order for the pod, in parallel across pods, so a pod
stopping through a long grace period holds up nobody else; a pass plans nothing for a pod whose
worker is busy (that worker reports and wakes a pass when its job ends). containers.py holds
what the start and restart jobs do."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from functools import partial

from k3py.agent.metamanager import MetaManager
from k3py.agent.pods import restarts, status
from k3py.agent.pods.containers import ContainerActions, grace_of
from k3py.agent.pods.events import EventRecorder
from k3py.agent.pods.inspects import listing_signature, running, unix_time
from k3py.agent.pods.podspec import PodSpecs
from k3py.agent.pods.probes import ContainerProbes
from k3py.agent.pods.record import PodRecord, pod_uid
from k3py.agent.pods.workers import PodWorkers
from k3py.agent.runtime.libpod import LibpodAPI
from k3py.agent.runtime.podman import LABEL_UID, container_name_for
from k3py.aio import cancel_and_wait, wait_event
from k3py.tunnel.message import (
    EDGE,
    GROUP_RESOURCE,
    OP_DELETE,
    OP_UPDATE,
    Message,
    new_message,
    resource_key,
)
from k3py.tunnel.protocol import VOLUME_KINDS

__all__ = ["PodSyncer"]

log = logging.getLogger("k3py.pods")

RESYNC_SECONDS = 30.0          # full pass while podman's events are followed
FALLBACK_RESYNC_SECONDS = 5.0  # full pass while they cannot be
EVENT_MIN_INTERVAL = 1.0       # at most one event-driven pass a second (crash loops)
_WAKE_EVENTS = {"died", "start", "remove"}


class PodSyncer:
    def __init__(self, *, meta: MetaManager, runtime: LibpodAPI,
                 send: Callable[[Message], Awaitable[None]], data_dir: str, node_name: str,
                 host_ip: str, server_url: str = "") -> None:
        self.meta = meta
        self.runtime = runtime
        self.send = send  # reliable up message (edgehub.send)
        self.pods_dir = os.path.join(data_dir, "agent", "pods")
        self.node_name = node_name
        self.host_ip = host_ip
        self.specs = PodSpecs(meta, server_url=server_url, host_ip=host_ip)
        self.events = EventRecorder(node_name=node_name, send=send, spawn=self._spawn)
        self.containers = ContainerActions(self)
        self.workers = PodWorkers()
        self._pods: dict[str, PodRecord] = {}  # uid -> what is known of the pod
        self._task: asyncio.Task | None = None
        self._events_task: asyncio.Task | None = None
        self._events_ok = False  # podman's events are being followed
        self._last_event_wake = 0.0
        self._wake_handle: asyncio.TimerHandle | None = None
        # wall clock before the last pass's listing: older events are already reflected
        self._synced_at = 0.0
        # uids with a podman pod at the last listing, or started since: a desired pod outside
        # this set (once a listing was made) is new and starts before the pass lists podman
        self._present: set[str] | None = None
        self._known_desired: set[str] = set()  # desired uids at the end of the last pass
        self._dirty = False  # something happened in podman: the next pass lists it
        # container id -> (listing_signature when inspected, inspect); refreshed on a change
        self._inspected: dict[str, tuple[tuple, dict]] = {}
        self._bg: set[asyncio.Task] = set()
        # called after a pod's status changed (the node's edge dashboard: agent/dashboard)
        self.status_listeners: list[Callable[[], None]] = []

    def start(self) -> None:
        self.specs.watch_tokens()
        self.meta.listeners.append(self._on_volumes)
        self._task = asyncio.create_task(self._loop(), name="pod-syncer")
        self._events_task = asyncio.create_task(self._follow_events(), name="pod-events")

    async def stop(self) -> None:
        self.specs.unwatch_tokens()
        if self._on_volumes in self.meta.listeners:
            self.meta.listeners.remove(self._on_volumes)
        if self._wake_handle is not None:
            self._wake_handle.cancel()
        for rec in self._pods.values():
            rec.cancel_timer()
            rec.stop_probes()
        for task in (self._events_task, self._task):
            await cancel_and_wait(task)
        await self.workers.stop()
        for task in self._bg:
            task.cancel()

    # ---------------------------------------------------------------- what others ask

    def log_marks(self, namespace: str, name: str, container: str) -> dict | None:
        """The container's log boundaries recorded at its restarts (None: never restarted)."""
        pod = self.find_pod(namespace, name)
        if pod is None:
            return None
        return self.restarts_of(pod_uid(pod)).setdefault(container, restarts.RestartState()).logs

    def container_name(self, namespace: str, name: str, container: str) -> str | None:
        pod = self.find_pod(namespace, name)
        return None if pod is None else container_name_for(pod, container)

    def status(self, uid: str) -> dict | None:
        """The pod's status as last reported (None before its first report)."""
        rec = self._pods.get(uid)
        return rec.sent_status if rec is not None else None

    def find_pod(self, namespace: str, name: str) -> dict | None:
        for pod in self.meta.pods():
            md = pod.get("metadata") or {}
            if md.get("namespace") == namespace and md.get("name") == name:
                return pod
        return None

    # ---------------------------------------------------------------- records

    def wanted(self, pod: dict) -> bool:
        """The pod is still desired here (not deleted, not replaced by another uid): a start
        checks between its steps, so a pod deleted meanwhile gets no more containers."""
        md = pod.get("metadata") or {}
        now = self.meta.get("pods", md.get("namespace") or "", md.get("name") or "")
        return now is not None and pod_uid(now) == pod_uid(pod) and \
            not (now.get("metadata") or {}).get("deletionTimestamp")

    def record(self, uid: str) -> PodRecord:
        rec = self._pods.get(uid)
        if rec is None:
            rec = self._pods[uid] = PodRecord()
        return rec

    def restarts_of(self, uid: str) -> dict[str, restarts.RestartState]:
        """The pod's restart state, read from what an earlier agent saved on first use."""
        rec = self.record(uid)
        if rec.restarts is None:
            rec.restarts = restarts.load_restarts(self.pods_dir, uid)
        return rec.restarts

    def save_restarts(self, uid: str) -> None:
        """Persist restart counts and backoff so an agent restart does not reset them."""
        rec = self._pods.get(uid)
        if rec is None or rec.restarts is None:
            return
        try:
            restarts.save_restarts(self.pods_dir, uid, rec.restarts)
        except OSError as e:
            log.warning("saving container state of pod %s: %s", uid, e)

    # ---------------------------------------------------------------- waking

    def wake(self) -> None:
        """Run a full pass (listing podman) now, not just the new pods' starts."""
        self._dirty = True
        self.meta.changed.set()

    def _on_volumes(self, kind: str) -> None:
        """A claim or volume arrived: the pods waiting for theirs try again now."""
        if kind not in (*VOLUME_KINDS, "sync"):
            return
        waiting = [rec for rec in self._pods.values() if rec.volume_wait]
        for rec in waiting:
            rec.retry_at = 0.0
        if waiting:
            self.wake()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    def _wake_at(self, uid: str, at: float) -> None:
        """A full pass at wall-clock time `at` (a backoff ends); one timer per pod, the
        earliest wins (the pass it causes schedules the later ones again)."""
        now = time.time()
        rec = self.record(uid)
        if rec.timer is not None and now < rec.timer[0] <= at:
            return
        rec.cancel_timer()

        def fire() -> None:
            rec.timer = None
            self.wake()
        handle = asyncio.get_running_loop().call_later(max(0.0, at - now) + 0.05, fire)
        rec.timer = (at, handle)

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
            for uid, rec in self._pods.items():
                if rec.start_failures and rec.retry_at > now and not self.workers.busy(uid):
                    timeout = min(timeout, rec.retry_at - now + 0.05)  # the backoff retry
            if await wait_event(self.meta.changed, timeout):
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
                    self.wake()  # events may have been missed meanwhile
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
        rec = self._pods.get(uid)
        if rec is not None and rec.stopping:
            return  # its stop wakes a pass when it ends
        at = unix_time(ev.get("Time"))
        if at is not None and at < max(self._synced_at, rec.started_at if rec else 0.0):
            return  # e.g. our own start: seen by the inspect or listing that came after it
        if rec is not None and self.workers.busy(uid):
            rec.missed = True  # its worker wakes a pass when its job ends
            return
        if self._wake_handle is not None:
            return  # a wake is already due: events in a burst share it
        delay = max(0.0, self._last_event_wake + EVENT_MIN_INTERVAL - time.monotonic())
        self._wake_handle = asyncio.get_running_loop().call_later(delay, self._event_wake)

    def _event_wake(self) -> None:
        self._wake_handle = None
        self._last_event_wake = time.monotonic()
        self.wake()

    # ---------------------------------------------------------------- a pass

    async def sync_once(self, full: bool = True) -> bool:
        """One pass; returns whether it listed podman. Without `full`, a pass for a metadata
        change that only added pods starts them and lists nothing (podman did not change:
        events or the start's own report say when it does)."""
        desired, terminating = self._desired()
        if self._present is not None:
            await self._launch_new(desired)
            if not full and self._only_added(desired, terminating):
                self._known_desired = set(desired)
                return False
        # snapshot before listing: a start finishing during the listing must not look absent
        busy = self.workers.busy_uids()
        stopping = {uid for uid, rec in self._pods.items() if rec.stopping}
        listed_at = time.time()
        actual = await self.runtime.list_pods(claim=desired.keys() | terminating.keys())
        self._present = set(actual) | busy
        by_pod = await self._containers_by_pod()
        self._synced_at = listed_at
        self._stop_undesired(actual, desired, terminating, stopping)
        await self._finalize_stopped(actual, terminating, busy)
        for uid, pod in desired.items():
            if uid not in actual and uid not in busy:
                await self._launch(uid, pod)
        await self._advance_present(actual, by_pod, desired, busy)
        self._known_desired = set(desired)
        self._forget_gone(desired, terminating)
        return True

    def _desired(self) -> tuple[dict[str, dict], dict[str, dict]]:
        """(desired pods, pods being deleted) by uid, from metamanager."""
        desired: dict[str, dict] = {}
        terminating: dict[str, dict] = {}
        for p in self.meta.pods():
            if pod_uid(p):
                deleting = (p.get("metadata") or {}).get("deletionTimestamp")
                (terminating if deleting else desired)[pod_uid(p)] = p
        return desired, terminating

    async def _launch_new(self, desired: dict[str, dict]) -> None:
        """Start the pods podman had not at the last listing: no need to wait for one."""
        for uid, pod in desired.items():
            rec = self._pods.get(uid)
            if uid not in self._present and not (rec and rec.start_failures):
                await self._launch(uid, pod)

    def _only_added(self, desired: dict[str, dict], terminating: dict[str, dict]) -> bool:
        """Nothing went away since the last pass and every deleted pod was finalized."""
        return all(u in desired for u in self._known_desired) and all(
            (rec := self._pods.get(u)) is not None and rec.finalized for u in terminating)

    def _stop_undesired(self, actual: dict[str, dict], desired: dict[str, dict],
                        terminating: dict[str, dict], stopping: set[str]) -> None:
        """Stop, in their workers, the podman pods of pods deleted or no longer here (after
        the job a worker is doing: a start in flight ends first, and starts nothing more).
        `stopping`: the pods whose stop ran when podman was listed (one that ended since is
        in the listing still, and gone)."""
        for uid, info in actual.items():
            if uid in desired or uid in stopping or \
                    ((rec := self._pods.get(uid)) is not None and rec.stopping):
                continue
            pod = terminating.get(uid)
            grace = grace_of(pod) if pod is not None else 2
            log.info("stopping pod %s (%s, grace %ss)", info.get("Name"),
                     "deleted" if pod is not None else "no longer desired", grace)
            rec = self.record(uid)
            rec.stop_probes()
            if pod is not None:
                for c in (pod.get("spec") or {}).get("containers") or []:
                    self.events.event(rec, pod, "Killing", f"Stopping container {c['name']}",
                                      container=c["name"])
            rec.stopping = True
            self.workers.submit(uid, "stop", partial(self._remove, uid, info["Id"], grace))

    async def _finalize_stopped(self, actual: dict[str, dict], terminating: dict[str, dict],
                                busy: set[str]) -> None:
        """Deleted pods stopped here (or never started): the server deletes them for good."""
        for uid, pod in terminating.items():
            rec = self._pods.get(uid)
            if uid not in actual and uid not in busy and not (rec and rec.finalized):
                await self._finalize(pod)

    async def _advance_present(self, actual: dict[str, dict], by_pod: dict[str, list[dict]],
                               desired: dict[str, dict], busy: set[str]) -> None:
        """Each desired pod not busy: run what its plan says, or report its status."""
        for uid, pod in desired.items():
            rec = self._pods.get(uid)
            # a pod with a job reports itself when the job ends: a status computed here could
            # be older than that report and would overwrite it
            if uid in busy or self.workers.busy(uid):
                continue
            info = actual.get(uid)
            if info is None:
                if rec is not None:
                    rec.stop_probes()
                await self.report(pod, None, [])
                continue
            containers = by_pod.get(info.get("Id"), [])
            if rec is not None and rec.pulls:
                await self.containers.image_appeared(pod, rec)
            actions = self.plan(pod, containers).actions
            if actions:  # (re)start containers: the job reports when done
                self.workers.submit(uid, "act", partial(
                    self.containers.act, pod, info.get("Id"), info.get("Created"), actions))
            else:
                await self.report(pod, info.get("Created"), containers)

    def _forget_gone(self, desired: dict[str, dict], terminating: dict[str, dict]) -> None:
        """Drop what is known of pods neither desired nor being deleted (keeping what their
        workers' jobs need until they end), and the probes of pods not desired."""
        for uid in list(self._pods):
            if uid in desired:
                continue
            rec = self._pods[uid]
            if uid in terminating:
                rec.stop_probes()
                continue
            left = rec.forget(self.workers.busy(uid))
            if left is None:
                del self._pods[uid]
            else:
                self._pods[uid] = left

    async def _launch(self, uid: str, pod: dict) -> None:
        """Start the pod in its worker (a slow image pull must not hold up other pods),
        unless its worker is busy (starting or stopping it), or its backoff after a failure
        runs."""
        rec = self._pods.get(uid)
        if self.workers.busy(uid) or (rec is not None and rec.retry_at > time.monotonic()):
            return
        await self.report(pod, None, [])  # Pending/ContainerCreating, before the start
        self.workers.submit(uid, "start", partial(self.containers.start, pod))

    def started(self, uid: str) -> None:
        """The podman pod of `uid` was just created."""
        if self._present is not None:
            self._present.add(uid)

    async def _containers_by_pod(self) -> dict[str, list[dict]]:
        """podman pod id -> [container inspect] (infra included) for all our pods: one
        listing, and one inspect of just the containers that changed."""
        sigs = {c["Id"]: listing_signature(c) for c in await self.runtime.list_containers()
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

    def inspected(self, c: dict, signature: tuple) -> None:
        """A fresh inspect of one of our containers (after a start or restart)."""
        self._inspected[c["Id"]] = (signature, c)

    def infra_of(self, pod_id: str) -> list[dict]:
        """The infra container inspect of a podman pod, as last listed."""
        return [c for _, c in self._inspected.values()
                if c.get("Pod") == pod_id and c.get("IsInfra")]

    async def _remove(self, uid: str, pod_id: str, grace: int) -> None:
        """The pod's stop job: its containers get `grace` seconds, then it is removed."""
        try:
            await self.runtime.remove_pod(pod_id, grace=grace)
            if (rec := self._pods.get(uid)) is not None:
                rec.restarts = None
            with contextlib.suppress(OSError):
                await asyncio.to_thread(shutil.rmtree, os.path.join(self.pods_dir, uid))
        except Exception:  # noqa: BLE001 - the next sync retries
            log.exception("removing pod %s failed", pod_id)
        finally:
            if (rec := self._pods.get(uid)) is not None:
                rec.stopping = False
            self.wake()  # finalize now rather than at the next resync

    async def _finalize(self, pod: dict) -> None:
        """The containers are gone: ask the server to delete the pod object (grace 0)."""
        md = pod["metadata"]
        rec = self.record(pod_uid(pod))
        rec.finalized = True
        rec.error = None
        key = resource_key("pods", md["namespace"], md["name"])
        log.info("pod %s/%s terminated; deleting it", md["namespace"], md["name"])
        await self.send(new_message(source=EDGE, group=GROUP_RESOURCE, operation=OP_DELETE,
                                    resource=key, key=key + "/delete",
                                    content={"uid": pod_uid(pod)}))

    # ---------------------------------------------------------------- plan and status

    def plan(self, pod: dict, containers: list[dict]) -> restarts.Plan:
        """The pod's restart plan (restarts.py); persists new exits, sends BackOff Events and
        sets the timers of the backoffs it waits for."""
        uid = pod_uid(pod)
        rec = self.record(uid)
        p = restarts.plan(pod, containers, self.restarts_of(uid), rec.pulls)
        if p.new_exits:
            self.save_restarts(uid)
        md = pod["metadata"]
        for name, init in p.backoffs:
            self.events.event(rec, pod, "BackOff", f"Back-off restarting failed container "
                              f"{name} in pod {md['name']}_{md['namespace']}({uid})",
                              "Warning", name, init)
        for at in p.wake_at:
            self._wake_at(uid, at)
        return p

    async def report(self, pod: dict, created: str | None, containers: list[dict]) -> None:
        """Send the pod's status up, unless it is the one sent last."""
        st = self.status_of(pod, created, containers)
        rec = self.record(pod_uid(pod))
        if rec.sent_status == st:
            return
        rec.sent_status = st
        for listener in self.status_listeners:
            listener()
        md = pod["metadata"]
        key = resource_key("pods", md["namespace"], md["name"], "status")
        await self.send(new_message(source=EDGE, group=GROUP_RESOURCE, operation=OP_UPDATE,
                                    resource=key, key=key,
                                    content={"uid": pod_uid(pod), "status": st}))

    def status_of(self, pod: dict, created: str | None, containers: list[dict]) -> dict:
        """The pod's status from its podman pod's creation time and its containers' inspects
        (the infra container's too, when known: it holds the pod IP); starts and stops the
        probes of its containers on the way."""
        uid = pod_uid(pod)
        by_name, pod_ips = status.pod_network(pod, containers, self.host_ip)
        p = None
        if containers:
            self._sync_probes(pod, by_name, pod_ips[0] if pod_ips else "")
            p = self.plan(pod, containers)
        rec = self.record(uid)
        saved = rec.restarts or {}
        if by_name:  # read what an earlier agent saved, on the first report with containers
            saved = self.restarts_of(uid)
            for n in by_name:
                saved.setdefault(n, restarts.RestartState())
        return status.pod_status(
            pod, created=created, by_name=by_name, pod_ips=pod_ips, host_ip=self.host_ip,
            plan=p, error=rec.error, restarts=saved,
            probes={n: (pr.started, pr.ready) for n, (_, pr) in rec.probes.items()})

    # ---------------------------------------------------------------- probes

    def _sync_probes(self, pod: dict, by_name: dict[str, dict], pod_ip: str) -> None:
        """One ContainerProbes per running container instance that has probes."""
        rec = self.record(pod_uid(pod))
        for spec_c in (pod.get("spec") or {}).get("containers") or []:
            if not any(spec_c.get(k) for k in ("startupProbe", "livenessProbe",
                                                "readinessProbe")):
                continue
            name = spec_c["name"]
            c = by_name.get(name)
            cur = rec.probes.get(name)
            inst = f"{c.get('Id')}/{(c.get('State') or {}).get('StartedAt')}" if c else ""
            if running(c) and (cur is None or cur[0] != inst):
                if cur is not None:
                    cur[1].stop()
                probes = ContainerProbes(
                    spec_c, host=pod_ip or self.host_ip,
                    exec_fn=partial(self.runtime.exec_check, container_name_for(pod, name)),
                    on_change=partial(self._probe_changed, pod_uid(pod)),
                    on_unhealthy=partial(self._unhealthy, pod, name),
                    on_kill=partial(self._kill, pod, name, spec_c))
                probes.start()
                rec.probes[name] = (inst, probes)
            elif not running(c) and cur is not None:
                cur[1].stop()
                rec.probes.pop(name, None)

    def _probe_changed(self, uid: str) -> None:
        """A probe's result changed: a pass reports it; if the pod's worker is busy (its
        start is still reporting), that pass skips the pod, so the job's end wakes another."""
        if self.workers.busy(uid):
            self.record(uid).missed = True
        self.wake()

    def _unhealthy(self, pod: dict, name: str, kind: str, message: str) -> None:
        self.events.event(self.record(pod_uid(pod)), pod, "Unhealthy", message, "Warning", name)

    def _kill(self, pod: dict, name: str, spec_c: dict, message: str) -> None:
        """Liveness/startup gave up: SIGTERM, SIGKILL after the grace period; the exit is
        then restarted (or not) like any other."""
        self.events.event(self.record(pod_uid(pod)), pod, "Killing", message, container=name)
        grace = grace_of(pod)
        for kind in ("livenessProbe", "startupProbe"):
            g = (spec_c.get(kind) or {}).get("terminationGracePeriodSeconds")
            if isinstance(g, int) and g >= 0:
                grace = g

        async def stop() -> None:
            try:
                await self.runtime.stop_container(container_name_for(pod, name), grace)
            finally:
                self.wake()
        # in the pod's worker: the restart that follows is planned once the stop is done
        self.workers.submit(pod_uid(pod), "kill", stop)
