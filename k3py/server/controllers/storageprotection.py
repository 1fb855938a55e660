"""Upstream's storage object in-use protection: the admission step that puts
`kubernetes.io/pvc-protection` on every new claim and `kubernetes.io/pv-protection` on every new
volume, and the two controllers that take the finalizer off a deleted one once nothing uses it.

A claim is in use while a scheduled pod names it (a `persistentVolumeClaim` volume, or an
`ephemeral` one while the pod is not finished), so a claim deleted under a running pod stays
Terminating until the pod is gone; a volume is in use while it is Bound to a claim that still
exists. Objects made before (without the finalizer) are deleted at once, as upstream."""

from __future__ import annotations

import logging

from k3py.api.podrefs import volume_claim_name
from k3py.api.resources import Resource
from k3py.server.controllers.base import (
    Controller,
    ControllerContext,
    drop_finalizer,
    object_key,
    split_key,
)

__all__ = ["PVC_PROTECTION", "PV_PROTECTION", "StorageObjectInUseProtection",
           "PVCProtectionController", "PVProtectionController", "pod_uses_claim"]

log = logging.getLogger("k3py.controllers.storageprotection")

PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
_FINALIZER = {"persistentvolumeclaims": PVC_PROTECTION, "persistentvolumes": PV_PROTECTION}


class StorageObjectInUseProtection:
    """Admission (create): the protection finalizer on claims and volumes."""

    def __call__(self, res: Resource, obj: dict) -> None:
        fin = _FINALIZER.get(res.plural) if res.group == "" else None
        if fin is None:
            return
        md = obj.setdefault("metadata", {})
        fins = md.get("finalizers") or []
        if fin not in fins:
            md["finalizers"] = [*fins, fin]


def _deleting_with(obj: dict | None, finalizer: str) -> bool:
    md = (obj or {}).get("metadata") or {}
    return bool(md.get("deletionTimestamp")) and finalizer in (md.get("finalizers") or [])


def _finished(pod: dict) -> bool:
    return ((pod.get("status") or {}).get("phase") or "") in ("Succeeded", "Failed")


def pod_uses_claim(pod: dict, claim_name: str) -> bool:
    """Whether `pod` (of the claim's namespace) holds the claim, as upstream decides: only
    scheduled pods count (a node never starts a pod whose claim is being deleted), and an
    ephemeral volume's claim only while the pod is not finished."""
    spec = pod.get("spec") or {}
    if not spec.get("nodeName") or not claim_name:
        return False
    return any(volume_claim_name(pod, vol) == claim_name and
               not (isinstance(vol.get("ephemeral"), dict) and _finished(pod))
               for vol in spec.get("volumes") or [])


def _claim_names(pod: dict | None) -> set[str]:
    return {name for vol in ((pod or {}).get("spec") or {}).get("volumes") or []
            if (name := volume_claim_name(pod, vol))}


async def _drop_finalizer(ctrl: Controller, res: Resource, obj: dict, finalizer: str) -> None:
    await drop_finalizer(ctrl.registry, res, obj, finalizer)
    log.debug("%s: %s removed from %s", ctrl.name, finalizer, object_key(obj))


class PVCProtectionController(Controller):
    """Removes kubernetes.io/pvc-protection from a deleted claim once no pod uses it."""

    name = "pvc-protection"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.res = ctx.resource("", "persistentvolumeclaims")

    def setup(self) -> None:
        self.claims = self.ctx.informers.informer("", "persistentvolumeclaims")
        self.pods = self.ctx.informers.informer("", "pods")
        self.claims.add_handler(self._on_claim)
        self.pods.add_handler(self._on_pod)

    def _on_claim(self, etype: str, old: dict | None, new: dict | None) -> None:
        if _deleting_with(new, PVC_PROTECTION):
            self.enqueue(object_key(new))

    def _on_pod(self, etype: str, old: dict | None, new: dict | None) -> None:
        # a pod gone, finished or moved off a claim may release it
        pod = new or old
        if pod is None:
            return
        ns = pod["metadata"].get("namespace") or ""
        for name in _claim_names(old) | _claim_names(new):
            if _deleting_with(self.claims.get(ns, name), PVC_PROTECTION):
                self.enqueue(f"{ns}/{name}")

    async def reconcile(self, key: str) -> None:
        for inf in (self.claims, self.pods):
            await inf.synced.wait()
        ns, name = split_key(key)
        claim = self.claims.get(ns, name)
        if not _deleting_with(claim, PVC_PROTECTION):
            return
        if any(pod_uses_claim(p, name) for p in self.pods.list(ns)):
            return  # the pod's change enqueues the claim again
        # the informer may lag behind a pod created a moment ago: ask the store
        pods = (await self.registry.list(self.ctx.resource("", "pods"), ns))["items"]
        if not any(pod_uses_claim(p, name) for p in pods):
            await _drop_finalizer(self, self.res, claim, PVC_PROTECTION)


class PVProtectionController(Controller):
    """Removes kubernetes.io/pv-protection from a deleted volume once it is not Bound to a
    claim that exists."""

    name = "pv-protection"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.res = ctx.resource("", "persistentvolumes")

    def setup(self) -> None:
        self.volumes = self.ctx.informers.informer("", "persistentvolumes")
        self.claims = self.ctx.informers.informer("", "persistentvolumeclaims")
        self.volumes.add_handler(self._on_volume)
        self.claims.add_handler(self._on_claim)

    def _on_volume(self, etype: str, old: dict | None, new: dict | None) -> None:
        if _deleting_with(new, PV_PROTECTION):
            self.enqueue(object_key(new))

    def _on_claim(self, etype: str, old: dict | None, new: dict | None) -> None:
        if etype == "DELETED" and old is not None:
            name = (old.get("spec") or {}).get("volumeName")
            if name and _deleting_with(self.volumes.get(None, name), PV_PROTECTION):
                self.enqueue(name)

    def _in_use(self, volume: dict) -> bool:
        if ((volume.get("status") or {}).get("phase")) != "Bound":
            return False
        ref = (volume.get("spec") or {}).get("claimRef") or {}
        claim = self.claims.get(ref.get("namespace"), ref.get("name") or "")
        return claim is not None and claim["metadata"].get("uid") == ref.get("uid")

    async def reconcile(self, key: str) -> None:
        for inf in (self.volumes, self.claims):
            await inf.synced.wait()
        _, name = split_key(key)
        volume = self.volumes.get(None, name)
        if _deleting_with(volume, PV_PROTECTION) and not self._in_use(volume):
            await _drop_finalizer(self, self.res, volume, PV_PROTECTION)
