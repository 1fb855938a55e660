"""Removal of deleted local-path volumes' directories on this node (K3s's local-path-provisioner
does it with a helper pod; here the agent does it itself).

The provisioner gives each volume the finalizer k3py.api.localpath.CLEANUP_FINALIZER, so a
deleted volume stays (Terminating) and goes down the tunnel to its node, also when the node
was offline at the time: it is in the node's snapshot when it comes back. For each such volume
in metamanager whose claim no pod of this node still uses, the agent removes the directory
(only <storage path>/pvc-<uid>_<namespace>_<claim> of that very volume: removable_directory)
and reports it up (reliable, so queued while offline); the server then drops the finalizer and
the volume is gone. A volume whose path is anything else is left alone, its data too, with a
warning: the finalizer stays until an administrator removes it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Awaitable, Callable

from k3py.agent.metamanager import MetaManager
from k3py.aio import cancel_and_wait
from k3py.api.localpath import (
    CLEANUP_FINALIZER,
    awaits_cleanup,
    removable_directory,
    volume_node,
)
from k3py.api.podrefs import pod_references
from k3py.tunnel.message import EDGE, GROUP_RESOURCE, OP_UPDATE, Message, new_message
from k3py.tunnel.protocol import VOLUME_KINDS, volume_cleaned_resource

__all__ = ["VolumeCleanup"]

log = logging.getLogger("k3py.storage")


class VolumeCleanup:
    """Started and stopped by agent/main.py; woken by metamanager changes of pods, claims,
    volumes and full syncs."""

    def __init__(self, meta: MetaManager, send: Callable[[Message], Awaitable[None]], *,
                 node_name: str, storage_path: str) -> None:
        self.meta = meta
        self.send = send  # reliable up message (edgehub.send)
        self.node_name = node_name
        self.storage_path = storage_path
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._done: set[str] = set()  # uids of volumes reported cleaned by this agent run
        self._refused: set[str] = set()  # uids warned about (a path outside the storage path)

    def start(self) -> None:
        self.meta.listeners.append(self._on_change)
        self._wake.set()
        self._task = asyncio.create_task(self._loop(), name="volume-cleanup")

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.meta.listeners.remove(self._on_change)
        await cancel_and_wait(self._task)

    def _on_change(self, kind: str) -> None:
        if kind in ("pods", "sync", *VOLUME_KINDS):
            self._wake.set()

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.clean_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next change tries again
                log.exception("volume cleanup failed")

    async def clean_once(self) -> int:
        """Remove what can be removed now; returns how many volumes were reported."""
        reported = 0
        for volume in self.meta.objects("persistentvolumes"):
            md = volume.get("metadata") or {}
            uid = md.get("uid") or ""
            if uid in self._done or not awaits_cleanup(volume) or \
                    volume_node(volume) != self.node_name or self._in_use(volume):
                continue
            path = removable_directory(volume, self.storage_path)
            if path is None:
                self._refuse(volume, "not its directory under the storage path "
                             f"{self.storage_path} (--default-local-storage-path)")
                continue
            try:
                await asyncio.to_thread(_remove_directory, path)
            except OSError as e:
                self._refuse(volume, str(e))
                continue
            log.info("volume %s deleted: removed %s", md.get("name"), path)
            await self.send(new_message(
                source=EDGE, group=GROUP_RESOURCE, operation=OP_UPDATE,
                resource=volume_cleaned_resource(md.get("name") or ""),
                key=volume_cleaned_resource(md.get("name") or ""), content={"uid": uid}))
            self._done.add(uid)
            reported += 1
        return reported

    def _refuse(self, volume: dict, why: str) -> None:
        md = volume.get("metadata") or {}
        if md.get("uid") not in self._refused:
            self._refused.add(md.get("uid") or "")
            log.warning("volume %s: not removing %r: %s; its finalizer %s stays until removed "
                        "by hand", md.get("name"),
                        ((volume.get("spec") or {}).get("hostPath") or {}).get("path"), why,
                        CLEANUP_FINALIZER)

    def _in_use(self, volume: dict) -> bool:
        """A pod of this node (running, or stopping) still names the volume's claim, and that
        claim, if still here, is bound to this volume: its directory stays until it is gone."""
        ref = (volume.get("spec") or {}).get("claimRef") or {}
        ns, claim = ref.get("namespace") or "", ref.get("name") or ""
        for pod in self.meta.pods():
            if (pod.get("metadata") or {}).get("namespace") != ns or \
                    ("persistentvolumeclaims", claim) not in pod_references(pod):
                continue
            cached = self.meta.get("persistentvolumeclaims", ns, claim)
            if cached is None or (cached.get("spec") or {}).get("volumeName") == \
                    (volume.get("metadata") or {}).get("name"):
                return True
        return False


def _remove_directory(path: str) -> None:
    """rmtree, which never follows a symbolic link inside; the path itself being one is an
    error (OSError), and so is a file; gone already is done."""
    if os.path.islink(path):
        raise OSError(f"{path} is a symbolic link")
    if os.path.lexists(path):
        shutil.rmtree(path)
