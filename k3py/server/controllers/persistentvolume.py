"""The PersistentVolume controller (upstream's persistentvolume-binder): binds claims to volumes
both ways, keeps the phases of both (Pending/Bound/Lost, Available/Bound/Released/Failed),
asks the class's provisioner for a volume, and reclaims a released volume (Retain keeps it,
Delete removes it unless a provisioner owns the deletion).

Claims wait for their first consumer's node when their class says WaitForFirstConsumer: the
scheduler (scheduler/volumebinding.py) then binds static volumes or annotates the claim with
the selected node, and the provisioner (localpath.py) creates the volume this binds."""

from __future__ import annotations

import logging

from k3py.api import errors
from k3py.api.objects import now_rfc3339
from k3py.server.controllers.base import Controller, ControllerContext, split_key
from k3py.server.controllers.volumematch import (
    ANN_BETA_STORAGE_PROVISIONER,
    ANN_BIND_COMPLETED,
    ANN_BOUND_BY_CONTROLLER,
    ANN_PROVISIONED_BY,
    ANN_STORAGE_PROVISIONER,
    annotations,
    bound_to_claim,
    claim_class,
    claim_names,
    claim_ref,
    delays_binding,
    find_matching_volume,
    mismatch,
)

__all__ = ["PersistentVolumeController", "COMPONENT"]

log = logging.getLogger("k3py.controllers.pv")

COMPONENT = "persistentvolume-controller"

_CLAIM, _VOLUME = "claim:", "volume:"


def _ann(obj: dict) -> dict:
    md = obj.setdefault("metadata", {})
    if not isinstance(md.get("annotations"), dict):
        md["annotations"] = {}
    return md["annotations"]


def _phase(obj: dict) -> str:
    return (obj.get("status") or {}).get("phase") or ""


class PersistentVolumeController(Controller):
    """One worker: two claims must not pick the same Available volume from a stale cache (the
    volume write also refuses a volume bound meanwhile)."""

    name = COMPONENT
    workers = 1

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.pvc_res = ctx.resource("", "persistentvolumeclaims")
        self.pv_res = ctx.resource("", "persistentvolumes")

    def setup(self) -> None:
        inf = self.ctx.informers
        self.claims = inf.informer("", "persistentvolumeclaims")
        self.volumes = inf.informer("", "persistentvolumes")
        self.classes = inf.informer("storage.k8s.io", "storageclasses")
        self.pods = inf.informer("", "pods")
        self.claims.add_handler(self._on_claim)
        self.volumes.add_handler(self._on_volume)
        self.classes.add_handler(self._on_class)

    # ------------------------------------------------------------ events in

    def _on_claim(self, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old or {}
        md = obj.get("metadata") or {}
        self.enqueue(f"{_CLAIM}{md.get('namespace')}/{md.get('name')}")
        volume = (obj.get("spec") or {}).get("volumeName")
        if volume:
            self.enqueue(f"{_VOLUME}{volume}")
        if etype == "DELETED":
            # a volume bound to the claim is released (its claimRef may name the claim only)
            for vol in self.volumes.list():
                if bound_to_claim(vol, obj):
                    self.enqueue(f"{_VOLUME}{vol['metadata']['name']}")

    def _on_volume(self, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old or {}
        self.enqueue(f"{_VOLUME}{obj['metadata']['name']}")
        ref = (obj.get("spec") or {}).get("claimRef")
        if isinstance(ref, dict) and ref.get("name"):
            self.enqueue(f"{_CLAIM}{ref.get('namespace')}/{ref['name']}")
        if etype in ("ADDED", "DELETED") or _phase(obj) == "Available":
            self._pending_claims()

    def _on_class(self, etype: str, old: dict | None, new: dict | None) -> None:
        self._pending_claims()

    def _pending_claims(self) -> None:
        for claim in self.claims.list():
            if _phase(claim) != "Bound":
                md = claim["metadata"]
                self.enqueue(f"{_CLAIM}{md['namespace']}/{md['name']}")

    async def reconcile(self, key: str) -> None:
        await self.claims.synced.wait()
        await self.volumes.synced.wait()
        await self.classes.synced.wait()
        if key.startswith(_CLAIM):
            ns, name = split_key(key[len(_CLAIM):])
            claim = self.claims.get(ns, name)
            if claim is not None and not claim["metadata"].get("deletionTimestamp"):
                await self.sync_claim(claim)
        else:
            volume = self.volumes.get(None, key[len(_VOLUME):])
            if volume is not None:
                await self.sync_volume(volume)

    # ------------------------------------------------------------ claims

    async def sync_claim(self, claim: dict) -> None:
        if annotations(claim).get(ANN_BIND_COMPLETED) != "yes":
            await self._sync_unbound_claim(claim)
        else:
            await self._sync_bound_claim(claim)

    async def _sync_unbound_claim(self, claim: dict) -> None:
        wanted = (claim.get("spec") or {}).get("volumeName")
        if not wanted:
            cls_name = claim_class(claim)
            sc = self.classes.get(None, cls_name) if cls_name else None
            delay = delays_binding(claim, sc)
            volume = find_matching_volume(claim, self.volumes.list(), delay_binding=delay)
            if volume is not None:
                await self.bind(volume, claim)
                return
            await self._set_claim_phase(claim, "Pending")
            if delay:
                await self._explain_delay(claim)
            elif sc is not None:
                await self._provision(claim, sc)
            elif cls_name:
                await self._event(claim, "Warning", "ProvisioningFailed",
                                  f'storageclass.storage.k8s.io "{cls_name}" not found')
            else:
                await self._event(claim, "Normal", "FailedBinding",
                                  "no persistent volumes available for this claim and no "
                                  "storage class is set")
            return
        volume = self.volumes.get(None, wanted)
        if volume is None:
            await self._set_claim_phase(claim, "Pending")
            return
        ref = (volume.get("spec") or {}).get("claimRef")
        if not ref:
            why = mismatch(volume, claim)
            if why:
                await self._event(claim, "Warning", "VolumeMismatch", f"Cannot bind to "
                                  f"requested volume \"{wanted}\": {why}")
                await self._set_claim_phase(claim, "Pending")
                return
            await self.bind(volume, claim)
        elif bound_to_claim(volume, claim):
            await self.bind(volume, claim)
        else:
            await self._event(claim, "Warning", "FailedBinding",
                              f'volume "{wanted}" already bound to a different claim.')
            await self._set_claim_phase(claim, "Pending")

    async def _sync_bound_claim(self, claim: dict) -> None:
        wanted = (claim.get("spec") or {}).get("volumeName")
        if not wanted:
            await self._lose(claim, "ClaimLost", "Bound claim has lost reference to "
                             "PersistentVolume. Data on the volume is lost!")
            return
        volume = self.volumes.get(None, wanted)
        if volume is None:
            await self._lose(claim, "ClaimLost", "Bound claim has lost its PersistentVolume. "
                             "Data on the volume is lost!")
            return
        ref = (volume.get("spec") or {}).get("claimRef")
        if not ref or ref.get("uid") == claim["metadata"].get("uid"):
            await self.bind(volume, claim)
        else:
            await self._lose(claim, "ClaimMisbound", "Two claims are bound to the same "
                             "volume, this one is bound incorrectly")

    async def _lose(self, claim: dict, reason: str, message: str) -> None:
        if _phase(claim) != "Lost":
            await self._set_claim_phase(claim, "Lost")
            await self._event(claim, "Warning", reason, message)

    async def _explain_delay(self, claim: dict) -> None:
        md = claim["metadata"]
        waiting = [p for p in self.pods.list(md["namespace"])
                   if md["name"] in claim_names(p) and not (p.get("spec") or {}).get("nodeName")
                   and not (p.get("metadata") or {}).get("deletionTimestamp")]
        if waiting:
            await self._event(claim, "Normal", "WaitForPodScheduled",
                              f"waiting for pod {waiting[0]['metadata']['name']} to be "
                              "scheduled")
        else:
            await self._event(claim, "Normal", "WaitForFirstConsumer",
                              "waiting for first consumer to be created before binding")

    async def _provision(self, claim: dict, sc: dict) -> None:
        """Hand the claim to its class's provisioner: the annotations it watches for, and
        upstream's event while it works."""
        provisioner = sc.get("provisioner") or ""
        if provisioner == "kubernetes.io/no-provisioner":
            await self._event(claim, "Normal", "FailedBinding",
                              "no persistent volumes available for this claim")
            return
        ann = annotations(claim)
        if ann.get(ANN_STORAGE_PROVISIONER) != provisioner or \
                ann.get(ANN_BETA_STORAGE_PROVISIONER) != provisioner:
            def mutate(cur: dict) -> dict | None:
                if (cur.get("spec") or {}).get("volumeName"):
                    return None
                a = _ann(cur)
                a[ANN_STORAGE_PROVISIONER] = provisioner
                a[ANN_BETA_STORAGE_PROVISIONER] = provisioner
                return cur
            md = claim["metadata"]
            await self.registry.update_with(self.pvc_res, md["namespace"], md["name"], mutate)
        await self._event(claim, "Normal", "ExternalProvisioning",
                          "Waiting for a volume to be created either by the external "
                          f"provisioner '{provisioner}' or manually by the system "
                          "administrator. If volume creation is delayed, please verify that "
                          "the provisioner is running and correctly registered.")

    # ------------------------------------------------------------ binding

    async def bind(self, volume: dict, claim: dict) -> None:
        """Volume's claimRef, volume Bound, claim's volumeName and annotations, claim Bound;
        each write is skipped when already so, so this also finishes a half-done binding."""
        bound = await self._bind_volume(volume, claim)
        if bound is None:
            return
        await self._set_volume_phase(bound, "Bound")
        claim = await self._bind_claim(claim, bound)
        if claim is None:
            return
        spec = bound.get("spec") or {}

        def status(cur: dict) -> dict | None:
            st = cur.setdefault("status", {})
            want = {"phase": "Bound", "accessModes": spec.get("accessModes") or [],
                    "capacity": dict(spec.get("capacity") or {})}
            if all(st.get(k) == v for k, v in want.items()):
                return None
            st.update(want)
            return cur
        md = claim["metadata"]
        await self.registry.update_with(self.pvc_res, md["namespace"], md["name"], status,
                                        subresource="status")

    async def _bind_volume(self, volume: dict, claim: dict) -> dict | None:
        cmd = claim["metadata"]

        def mutate(cur: dict) -> dict | None:
            spec = cur.setdefault("spec", {})
            ref = spec.get("claimRef")
            if ref and not bound_to_claim(cur, claim):
                raise errors.conflict("", "persistentvolumes", cur["metadata"]["name"],
                                      "the volume was bound to another claim meanwhile")
            want = claim_ref(claim)
            if ref and all(ref.get(k) == want[k] for k in ("uid", "name", "namespace")):
                return None
            if not ref:
                _ann(cur)[ANN_BOUND_BY_CONTROLLER] = "yes"
            spec["claimRef"] = {**(ref or {}), **want}
            return cur
        out = await self.registry.update_with(self.pv_res, None, volume["metadata"]["name"],
                                              mutate)
        if out is None:
            out = await self.registry.try_get(self.pv_res, None, volume["metadata"]["name"])
            if out is None or not bound_to_claim(out, claim):
                return None
        log.info("bound volume %s to claim %s/%s", out["metadata"]["name"], cmd["namespace"],
                 cmd["name"])
        return out

    async def _bind_claim(self, claim: dict, volume: dict) -> dict | None:
        name = volume["metadata"]["name"]
        uid = claim["metadata"].get("uid")

        def mutate(cur: dict) -> dict | None:
            if cur["metadata"].get("uid") != uid:
                return None
            spec = cur.setdefault("spec", {})
            ann = _ann(cur)
            if spec.get("volumeName") == name and ann.get(ANN_BIND_COMPLETED) == "yes":
                return None
            if spec.get("volumeName") not in (None, "", name):
                return None
            if not spec.get("volumeName"):
                ann[ANN_BOUND_BY_CONTROLLER] = "yes"
            spec["volumeName"] = name
            ann[ANN_BIND_COMPLETED] = "yes"
            return cur
        md = claim["metadata"]
        out = await self.registry.update_with(self.pvc_res, md["namespace"], md["name"], mutate)
        if out is None:
            out = await self.registry.try_get(self.pvc_res, md["namespace"], md["name"])
        if out is None or (out.get("spec") or {}).get("volumeName") != name:
            return None
        return out

    # ------------------------------------------------------------ volumes

    async def sync_volume(self, volume: dict) -> None:
        if volume["metadata"].get("deletionTimestamp"):
            return
        ref = (volume.get("spec") or {}).get("claimRef")
        if not isinstance(ref, dict) or not ref.get("name"):
            await self._set_volume_phase(volume, "Available")
            return
        if not ref.get("uid"):
            # pre-bound by a user: the claim's sync binds it
            await self._set_volume_phase(volume, "Available")
            return
        claim = self.claims.get(ref.get("namespace"), ref["name"])
        if claim is not None and claim["metadata"].get("uid") != ref.get("uid"):
            claim = None
        if claim is None:
            # the informer may lag behind a claim created a moment ago: ask the store
            claim = await self.registry.try_get(self.pvc_res, ref.get("namespace"), ref["name"])
            if claim is not None and claim["metadata"].get("uid") != ref.get("uid"):
                claim = None
        if claim is None:
            if _phase(volume) not in ("Released", "Failed"):
                volume = await self._set_volume_phase(volume, "Released") or volume
            await self._reclaim(volume)
            return
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if not volume_name:
            # the claim's sync finishes the binding
            return
        if volume_name == volume["metadata"]["name"]:
            await self._set_volume_phase(volume, "Bound")
            return
        # the claim is bound to another volume
        if annotations(volume).get(ANN_PROVISIONED_BY) and \
                (volume.get("spec") or {}).get("persistentVolumeReclaimPolicy") == "Delete":
            volume = await self._set_volume_phase(volume, "Released") or volume
            await self._reclaim(volume)
        elif annotations(volume).get(ANN_BOUND_BY_CONTROLLER) == "yes":
            await self._unbind(volume)

    async def _unbind(self, volume: dict) -> None:
        def mutate(cur: dict) -> dict | None:
            spec = cur.setdefault("spec", {})
            if not spec.get("claimRef"):
                return None
            spec["claimRef"] = None
            _ann(cur).pop(ANN_BOUND_BY_CONTROLLER, None)
            return cur
        out = await self.registry.update_with(self.pv_res, None, volume["metadata"]["name"],
                                              mutate)
        if out is not None:
            await self._set_volume_phase(out, "Available")

    async def _reclaim(self, volume: dict) -> None:
        policy = (volume.get("spec") or {}).get("persistentVolumeReclaimPolicy") or "Retain"
        name = volume["metadata"]["name"]
        if policy == "Retain":
            log.debug("volume %s is released and kept (Retain)", name)
            return
        if policy == "Recycle":
            await self._fail(volume, "VolumeFailedRecycle",
                             "No recycler plugin found for the volume!")
            return
        if annotations(volume).get(ANN_PROVISIONED_BY):
            return  # its provisioner deletes it (localpath.py for rancher.io/local-path)
        await self._fail(volume, "VolumeFailedDelete",
                         "error getting deleter volume plugin for volume "
                         f"\"{name}\": no deletable volume plugin matched")

    async def _fail(self, volume: dict, reason: str, message: str) -> None:
        if _phase(volume) == "Failed":
            return
        await self._set_volume_phase(volume, "Failed", message)
        await self._event(volume, "Warning", reason, message)

    # ------------------------------------------------------------ status writes

    async def _set_claim_phase(self, claim: dict, phase: str) -> None:
        if _phase(claim) == phase:
            return

        def mutate(cur: dict) -> dict | None:
            st = cur.setdefault("status", {})
            if st.get("phase") == phase:
                return None
            st["phase"] = phase
            if phase == "Pending":
                st.pop("capacity", None)
                st.pop("accessModes", None)
            return cur
        md = claim["metadata"]
        await self.registry.update_with(self.pvc_res, md["namespace"], md["name"], mutate,
                                        subresource="status")

    async def _set_volume_phase(self, volume: dict, phase: str,
                                message: str = "") -> dict | None:
        if _phase(volume) == phase and (volume.get("status") or {}).get("message", "") == \
                message:
            return volume

        def mutate(cur: dict) -> dict | None:
            st = cur.setdefault("status", {})
            if st.get("phase") == phase and st.get("message", "") == message:
                return None
            if st.get("phase") != phase:
                st["lastPhaseTransitionTime"] = now_rfc3339()
            st["phase"] = phase
            st.pop("reason", None)
            st.pop("message", None)
            if message:
                st["message"] = message
            return cur
        out = await self.registry.update_with(self.pv_res, None, volume["metadata"]["name"],
                                              mutate, subresource="status")
        return out

    async def _event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        await self.ctx.recorder.record(obj, type_, reason, message, component=COMPONENT)
