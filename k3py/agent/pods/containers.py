"""What a pod's start and restart jobs do in podman: a new pod's start (volumes, sandbox, first
containers) and a present pod's actions from its restart plan (runs, restarts), each followed
by a fresh inspect and the pod's status. They run in the pod's worker (workers.py), for the
pod syncer (syncer.py), which owns the records, the reporting and the Events they produce."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING

from k3py.agent.lifecycle import podman_limits
from k3py.agent.logwindow import last_line_time
from k3py.agent.pods.inspects import inspect_signature, running, terminated
from k3py.agent.pods.record import PodRecord, pod_uid
from k3py.agent.pods.restarts import (
    PullFailure,
    RestartState,
    Run,
    next_backoff,
    note_pull_failure,
)
from k3py.agent.runtime.podman import RuntimeError_, container_name_for
from k3py.agent.storage.claims import VolumeNotReady

if TYPE_CHECKING:
    from k3py.agent.pods.syncer import PodSyncer

__all__ = ["ContainerActions", "grace_of"]

log = logging.getLogger("k3py.pods")

VOLUME_RETRY_MAX = 10.0  # seconds between tries of a pod waiting for its volume, at most


def grace_of(pod: dict) -> int:
    """The pod's termination grace period in seconds (its deletion's, when deleted)."""
    md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    grace = md.get("deletionGracePeriodSeconds")
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds", 30)
    try:
        return max(0, int(grace))
    except (TypeError, ValueError):
        return 30


def _container_names(pod: dict) -> list[str]:
    spec = pod.get("spec") or {}
    return [container_name_for(pod, c["name"])
            for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]]


class ContainerActions:
    def __init__(self, syncer: PodSyncer) -> None:
        self.syncer = syncer
        self.runtime = syncer.runtime

    def _event(self, pod: dict, reason: str, message: str, type_: str = "Normal",
               container: str | None = None, init: bool = False) -> None:
        self.syncer.events.event(self.syncer.record(pod_uid(pod)), pod, reason, message, type_,
                                 container, init)

    def _volumes(self, pod: dict) -> dict[str, str]:
        return self.syncer.specs.prepare_volumes(
            pod, os.path.join(self.syncer.pods_dir, pod_uid(pod), "volumes"))

    async def start(self, pod: dict) -> None:
        """A new pod: its volumes and podman pod, then what its plan says first (the first
        init container, or all app containers), and its status right away."""
        uid = pod_uid(pod)
        created: str | None = None
        containers: list[dict] = []
        ok = False
        if not self.syncer.wanted(pod):
            self.syncer.wake()  # deleted before its start began: finalized by the next pass
            return
        try:
            vols = await asyncio.to_thread(self._volumes, pod)
            name = await self.runtime.create_sandbox(pod)
            ok = True
            self.syncer.started(uid)
            rec = self.syncer.record(uid)
            rec.error, rec.volume_wait = None, False
            rec.start_failures, rec.retry_at = 0, 0.0
            await self._do(pod, self.syncer.plan(pod, []).actions, vols)
            log.info("started pod %s/%s", pod["metadata"]["namespace"], pod["metadata"]["name"])
            # one inspect of this pod and its containers: its status goes up now
            self.syncer.record(uid).started_at = time.time()
            for item in await self.runtime.inspect(name, *_container_names(pod)):
                if isinstance(item.get("State"), dict):  # a container (a pod's is a string)
                    containers.append(item)
                    self.syncer.inspected(item, inspect_signature(item))
                else:
                    created = item.get("Created")
        except Exception as e:  # noqa: BLE001 - retried with backoff
            if ok:
                log.warning("starting containers of pod %s failed: %s", uid, e)
            elif isinstance(e, VolumeNotReady):
                self._volume_wait(pod, e)
            elif isinstance(e, RuntimeError_):
                self.syncer.record(uid).error = (e.reason, str(e))
                log.warning("pod %s/%s: %s", pod["metadata"]["namespace"],
                            pod["metadata"]["name"], e)
            else:
                log.exception("starting pod %s/%s failed", pod["metadata"]["namespace"],
                              pod["metadata"]["name"])
            if not ok:
                rec = self.syncer.record(uid)
                rec.start_failures += 1
                rec.retry_at = time.monotonic() + min(
                    VOLUME_RETRY_MAX if rec.volume_wait else 60.0, 2.0 ** rec.start_failures)
        finally:
            try:  # report the outcome now, not on the next full pass
                await self.syncer.report(pod, created, containers)
            except Exception:  # noqa: BLE001 - the next pass reports it
                log.exception("reporting pod %s failed", uid)
            finally:
                rec = self.syncer.record(uid)
                settled = containers and all(running(c) for c in containers) and \
                    not (pod.get("spec") or {}).get("initContainers")
                if not ok or not settled or rec.missed:
                    self.syncer.wake()  # schedule the retry / find the real state / next step
                rec.missed = False

    def _volume_wait(self, pod: dict, e: VolumeNotReady) -> None:
        """The pod waits in ContainerCreating for its claim's volume, with the kubelet's
        FailedMount Event; retried when a claim or volume arrives (syncer.py), or soon."""
        rec = self.syncer.record(pod_uid(pod))
        rec.error = ("ContainerCreating", str(e))
        rec.volume_wait = True
        self._event(pod, "FailedMount", f"Unable to attach or mount volumes: unmounted "
                    f"volumes=[{e.volume}]: {e}", "Warning")
        log.info("pod %s/%s waits for volume %s: %s", pod["metadata"]["namespace"],
                 pod["metadata"]["name"], e.volume, e)

    async def act(self, pod: dict, pod_id: str, created: str | None, actions: list) -> None:
        """Run a present pod's pending actions (restarts, next init container, app
        containers), then report its status from a fresh inspect."""
        uid = pod_uid(pod)
        try:
            vols = None
            if any(isinstance(a, Run) for a in actions):
                vols = await asyncio.to_thread(self._volumes, pod)
            await self._do(pod, actions, vols or {})
            self.syncer.record(uid).started_at = time.time()
            fresh = {c["Id"]: c for c in await self.runtime.inspect(*_container_names(pod))
                     if isinstance(c.get("State"), dict)}
            for c in fresh.values():
                self.syncer.inspected(c, inspect_signature(c))
            containers = list(fresh.values()) + [
                c for c in self.syncer.infra_of(pod_id) if c["Id"] not in fresh]
            await self.syncer.report(pod, created, containers)
        except Exception:  # noqa: BLE001 - the next pass retries
            log.exception("pod %s/%s: acting failed", pod["metadata"]["namespace"],
                          pod["metadata"]["name"])
        finally:
            self.syncer.record(uid).missed = False
            self.syncer.wake()

    async def _do(self, pod: dict, actions: list, vols: dict[str, str]) -> None:
        for action in actions:
            if not self.syncer.wanted(pod):
                return  # deleted meanwhile: its stop job comes next in its worker
            if isinstance(action, Run):
                await self._run_container(pod, action.name, action.key, vols)
            else:
                await self._restart_container(pod, action.name, action.init, action.inspect)

    async def _run_container(self, pod: dict, name: str, key: str, vols: dict[str, str]
                             ) -> None:
        """Pull (per imagePullPolicy) and run one container; a failure is remembered with
        its backoff (ErrImagePull → ImagePullBackOff) rather than raised."""
        uid, init = pod_uid(pod), key == "initContainers"
        spec_c = next(c for c in (pod.get("spec") or {}).get(key) or [] if c["name"] == name)
        rc = next(c for c in self.syncer.specs.container_specs(pod, vols, key=key)
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
                pod, rc, limits=podman_limits(spec_c), grace=grace_of(pod))
        except RuntimeError_ as e:
            self._event(pod, "Failed", f"Error: {e}", "Warning", name, init)
            self._failed(pod, name, e)
            return
        rec = self.syncer.record(uid)
        if not limited and not rec.limits_warned:
            rec.limits_warned = True
            log.warning("pod %s/%s: podman refused the resource limits here (cgroups?); "
                        "its containers run without them", pod["metadata"]["namespace"],
                        pod["metadata"]["name"])
        rec.pulls.pop(name, None)
        self._event(pod, "Created", f"Created container {name}", container=name, init=init)
        self._event(pod, "Started", f"Started container {name}", container=name, init=init)

    def _failed(self, pod: dict, name: str, e: RuntimeError_) -> None:
        entry = self.syncer.record(pod_uid(pod)).pulls.setdefault(
            name, PullFailure(e.reason, str(e)))
        note_pull_failure(entry, e.reason, str(e), time.time())
        log.warning("pod %s/%s container %s: %s", pod["metadata"]["namespace"],
                    pod["metadata"]["name"], name, e)

    async def image_appeared(self, pod: dict, rec: PodRecord) -> None:
        """A full pass ends the pull backoff of images that appeared meanwhile (e.g. `k3py
        airgap import`, `podman load`): retried now rather than up to 5 min later."""
        spec = pod.get("spec") or {}
        images = {c["name"]: c.get("image") or "" for c in
                  [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]}
        now = time.time()
        for name, entry in rec.pulls.items():
            if entry.reason in ("ErrImagePull", "ErrImageNeverPull") and \
                    entry.due > now and images.get(name) and \
                    await self.runtime.image_exists(images[name]):
                entry.due = now

    async def _restart_container(self, pod: dict, name: str, init: bool, c: dict) -> None:
        """Start an exited container again (its backoff is over): counted and persisted."""
        uid = pod_uid(pod)
        entry = self.syncer.restarts_of(uid).setdefault(name, RestartState())
        entry.restarts += 1
        entry.last = terminated(c)
        entry.backoff = next_backoff(entry.delay)
        cname = container_name_for(pod, name)
        await self._mark_log(entry, cname)
        self.syncer.save_restarts(uid)
        try:
            await self.runtime.start_container(cname)
        except RuntimeError_ as e:
            log.warning("restarting %s of pod %s failed: %s", name, uid, e)
            return
        self._event(pod, "Created", f"Created container {name}", container=name, init=init)
        self._event(pod, "Started", f"Started container {name}", container=name, init=init)

    async def _mark_log(self, entry: RestartState, cname: str) -> None:
        """Before a restart: where the ended run's log stops (see agent/logwindow.py), so
        `kubectl logs` shows the current run only and `--previous` the one before."""
        out = b""
        try:
            async for chunk in self.runtime.logs(cname, tail=1, timestamps=True):
                out += chunk
        except OSError as e:
            log.warning("reading the log end of %s: %s", cname, e)
        marks = entry.logs or {}
        last = last_line_time(out) or marks.get("cur")
        entry.logs = {"prev": marks.get("cur"), "cur": last}
