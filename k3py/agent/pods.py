"""The pod syncer (edged): makes podman match the desired pods in metamanager and reports
pod status up through edgehub.

Woken by metamanager changes, by `podman events` of our containers (exits, restarts, removals)
and by a rare full resync; adopts podman pods carrying our uid label after a restart, removes the
ones no longer desired, and sends status only when it changes. A pass costs two podman commands
for all pods (`pod ps`, `ps -a`) plus one batched `inspect` of the containers whose state changed
since they were last inspected; a started pod reports its own status right after its start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import time
from datetime import datetime

from k3py.agent.metamanager import MetaManager
from k3py.agent.podspec import container_specs, prepare_volumes
from k3py.agent.runtime.podman import (
    LABEL_CONTAINER,
    LABEL_UID,
    Podman,
    RuntimeError_,
    container_name_for,
)
from k3py.tunnel.message import (
    EDGE,
    GROUP_RESOURCE,
    OP_DELETE,
    OP_UPDATE,
    new_message,
    resource_key,
)

__all__ = ["PodSyncer", "phase_of"]

log = logging.getLogger("k3py.pods")

RESYNC_SECONDS = 30.0          # full pass while `podman events` is followed
FALLBACK_RESYNC_SECONDS = 5.0  # full pass while it cannot be
EVENT_MIN_INTERVAL = 1.0       # at most one event-driven pass a second (crash loops)
_WAKE_EVENTS = {"died", "start", "remove"}
_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:?\d\d)?$")


def _uid(pod: dict) -> str:
    return (pod.get("metadata") or {}).get("uid") or ""


def _state(c: dict) -> tuple[dict, bool]:
    st = c.get("State") or {}
    status = (st.get("Status") or "").lower()
    if status == "running":
        return {"running": {"startedAt": _ts(st.get("StartedAt"))}}, True
    if status in ("exited", "stopped"):
        return {"terminated": {"exitCode": st.get("ExitCode", 0),
                               "reason": "Completed" if st.get("ExitCode", 0) == 0 else "Error",
                               "startedAt": _ts(st.get("StartedAt")),
                               "finishedAt": _ts(st.get("FinishedAt"))}}, False
    return {"waiting": {"reason": "ContainerCreating"}}, False


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
        return "Running"  # podman is restarting them
    return "Pending"


def _unix(value) -> float | None:
    """podman time (RFC 3339 with nanoseconds) -> unix time."""
    m = _TIME.match(str(value or ""))
    if m is None:
        return None
    tz = m.group(3) or "Z"
    try:
        dt = datetime.fromisoformat(m.group(1) + ("+00:00" if tz == "Z" else tz))
    except ValueError:
        return None
    return dt.timestamp() + float("0" + (m.group(2) or ".0"))


def _epoch(value) -> int | None:
    """podman inspect time -> whole unix seconds, as `podman ps` gives them."""
    m = _TIME.match(str(value or ""))
    return None if m is None else int(_unix(m.group(1) + (m.group(3) or "Z")))


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
    def __init__(self, *, meta: MetaManager, runtime: Podman, send, data_dir: str,
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
        self._starting: dict[str, asyncio.Task] = {}  # uid -> pull/create/start in progress
        self._retry: dict[str, tuple[int, float]] = {}  # uid -> (failures, not before)
        self._finalized: set[str] = set()  # uids whose final delete was sent up
        # container id -> (_ps_sig when inspected, podman inspect); refreshed when ps differs
        self._inspected: dict[str, tuple[tuple, dict]] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="pod-syncer")
        self._events_task = asyncio.create_task(self._follow_events(), name="pod-events")

    async def stop(self) -> None:
        if self._wake_handle is not None:
            self._wake_handle.cancel()
        for task in (self._events_task, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        for task in [*self._removing.values(), *self._starting.values()]:
            task.cancel()

    def _wake(self) -> None:
        """Run a full pass (listing podman) now, not just the new pods' starts."""
        self._dirty = True
        self.meta.changed.set()

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
        if uid in self._starting or uid in self._removing:
            return  # they report / wake when they end
        at = _unix(ev.get("Time"))
        if at is not None and at < max(self._synced_at, self._started_at.get(uid, 0.0)):
            return  # e.g. our own start: seen by the inspect or listing that came after it
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
                    await self._report(pod, None, [])
                else:
                    await self._report(pod, info.get("Created"), by_pod.get(info.get("Id"), []))
        self._known_desired = set(desired)
        known = set(desired) | set(terminating)
        self._finalized &= known
        for d in (self._sent_status, self._retry, self._errors, self._started_at):
            for uid in [u for u in d if u not in known]:
                d.pop(uid, None)
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

    async def _start(self, pod: dict) -> None:
        uid = _uid(pod)
        created: str | None = None
        containers: list[dict] = []
        ok = False
        try:
            vols = await asyncio.to_thread(prepare_volumes, pod, self.meta,
                                           os.path.join(self.pods_dir, uid, "volumes"))
            specs = container_specs(pod, self.meta, vols, self.host_ip)
            name = await self.runtime.create_pod(pod, specs)
            ok = True
            if self._present is not None:
                self._present.add(uid)
            self._errors.pop(uid, None)
            self._retry.pop(uid, None)
            log.info("started pod %s/%s", pod["metadata"]["namespace"], pod["metadata"]["name"])
            # one inspect of this pod and its containers: its status goes up now
            self._started_at[uid] = time.time()
            items = await self.runtime.inspect(
                name, *[container_name_for(pod, c["name"]) for c in specs])
            for item in items:
                if isinstance(item.get("State"), dict):  # a container (a pod's is a string)
                    containers.append(item)
                    self._inspected[item["Id"]] = (_inspect_sig(item), item)
                else:
                    created = item.get("Created")
        except Exception as e:  # noqa: BLE001 - retried with backoff
            if ok:
                log.warning("inspecting started pod %s failed: %s", uid, e)
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
                if not ok or not containers:
                    self._wake()  # schedule the retry / find the real state

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
        (the infra container's too, when known: it holds the pod IP)."""
        spec = pod.get("spec") or {}
        names = [c["name"] for c in spec.get("containers") or []]
        by_name: dict[str, dict] = {}
        pod_ip = ""
        started = _ts(created)
        for c in sorted(containers, key=lambda c: not c.get("IsInfra")):  # infra first
            cname = ((c.get("Config") or {}).get("Labels") or {}).get(LABEL_CONTAINER)
            if cname:
                by_name[cname] = c
            if c.get("IsInfra") or (not pod_ip and cname):
                ip = (c.get("NetworkSettings") or {}).get("IPAddress") or ""
                pod_ip = pod_ip or ip
        if spec.get("hostNetwork"):
            pod_ip = self.host_ip
        err = self._errors.get(_uid(pod))
        statuses, states = [], []
        for name in names:
            c = by_name.get(name)
            image = next(x.get("image") for x in spec["containers"] if x["name"] == name)
            if c is None:
                state = {"waiting": {"reason": err[0], "message": err[1]} if err
                         else {"reason": "ContainerCreating"}}
                ready, restarts, image_id, cid = False, 0, "", ""
            else:
                state, ready = _state(c)
                restarts = c.get("RestartCount") or 0
                image_id, cid = c.get("Image") or "", f"podman://{c.get('Id')}"
                states.append(state)
            statuses.append({"name": name, "state": state, "ready": ready,
                             "restartCount": restarts, "image": image, "imageID": image_id,
                             "containerID": cid, "started": ready, "lastState": {}})
        if len(states) < len(names):
            phase = "Pending"
        else:
            phase = phase_of(spec.get("restartPolicy") or "Always", states)
        all_ready = bool(statuses) and all(s["ready"] for s in statuses)
        cond = "True" if all_ready else "False"
        status = {"phase": phase, "hostIP": self.host_ip, "podIP": pod_ip or None,
                  "podIPs": [{"ip": pod_ip}] if pod_ip else [],
                  "startTime": started, "containerStatuses": statuses, "qosClass": "BestEffort",
                  "conditions": [
                      {"type": "PodScheduled", "status": "True"},
                      {"type": "Initialized", "status": "True"},
                      {"type": "ContainersReady", "status": cond},
                      {"type": "Ready", "status": cond}]}
        return {k: v for k, v in status.items() if v is not None}

    def container_name(self, namespace: str, name: str, container: str) -> str | None:
        for pod in self.meta.pods():
            md = pod.get("metadata") or {}
            if md.get("namespace") == namespace and md.get("name") == name:
                return container_name_for(pod, container)
        return None
