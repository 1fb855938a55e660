"""The built-in local-path provisioner (K3s's local-path-provisioner, provisioner name
`rancher.io/local-path`): the default StorageClass `local-path`, a hostPath PersistentVolume
on the claim's selected node for every claim of that class, and the PV's deletion once its
claim is gone under reclaimPolicy Delete.

The volume lives at <storage dir>/pvc-<claim uid>_<namespace>_<claim name> on that node
(--default-local-storage-path, else <data-dir>/storage as in K3s); the node's agent creates
the directory when a pod mounts it (hostPath type DirectoryOrCreate) and removes it once the
volume is deleted (k3py.api.localpath.CLEANUP_FINALIZER holds the PV until then). The
PersistentVolume controller binds the PV this creates; the scheduler chose the node."""

from __future__ import annotations

import logging
import os

from k3py.api import errors
from k3py.api.localpath import ANN_PROVISIONED_BY, CLEANUP_FINALIZER, PROVISIONER, directory_name
from k3py.server.controllers.base import Controller, ControllerContext, split_key
from k3py.server.controllers.volumematch import (
    ANN_BETA_STORAGE_PROVISIONER,
    ANN_DEFAULT_CLASS,
    ANN_SELECTED_NODE,
    ANN_STORAGE_PROVISIONER,
    WAIT_FOR_CONSUMER,
    annotations,
    claim_class,
    claim_ref,
)
from k3py.server.registry import Registry

__all__ = ["LocalPathProvisioner", "PROVISIONER", "CLASS_NAME", "COMPONENT",
           "local_path_class", "ensure_local_path_class", "volume_path", "volume_name"]

log = logging.getLogger("k3py.controllers.localpath")

CLASS_NAME = "local-path"
COMPONENT = f"{PROVISIONER}_k3py"
# marks the StorageClass as the one k3py deployed, so --disable local-storage removes only it
ANN_ADDON = "k3py.io/addon"
ADDON = "local-storage"  # its --disable name
_ACCESS_MODES = ("ReadWriteOnce", "ReadWriteOncePod")


def local_path_class() -> dict:
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": CLASS_NAME,
                         "annotations": {ANN_DEFAULT_CLASS: "true", ANN_ADDON: ADDON}},
            "provisioner": PROVISIONER, "reclaimPolicy": "Delete",
            "volumeBindingMode": WAIT_FOR_CONSUMER}


async def ensure_local_path_class(registry: Registry, enabled: bool) -> None:
    """At server start: create the class when it is missing (an edited one is kept); with
    --disable local-storage, remove the one k3py made (a user's own `local-path` stays)."""
    res = registry.resources.get("storage.k8s.io", "v1", "storageclasses")
    cur = await registry.try_get(res, None, CLASS_NAME)
    if not enabled:
        if cur is not None and annotations(cur).get(ANN_ADDON) == ADDON:
            await registry.delete(res, None, CLASS_NAME, {})
            log.info("local-storage disabled: removed StorageClass %s", CLASS_NAME)
        return
    if cur is None:
        try:
            await registry.create(res, None, local_path_class())
        except errors.StatusError as e:
            if e.code != 409:  # another server of the same datastore made it
                raise


def volume_name(claim: dict) -> str:
    """Upstream's name for a provisioned volume: pvc-<claim uid>."""
    return f"pvc-{claim['metadata']['uid']}"


def volume_path(storage_dir: str, claim: dict) -> str:
    md = claim["metadata"]
    return os.path.join(storage_dir, directory_name(volume_name(claim), md["namespace"],
                                                    md["name"]))


def _provisioner_of(claim: dict) -> str:
    ann = annotations(claim)
    return ann.get(ANN_STORAGE_PROVISIONER) or ann.get(ANN_BETA_STORAGE_PROVISIONER) or ""


class LocalPathProvisioner(Controller):
    name = "local-path-provisioner"
    workers = 1

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.pvc_res = ctx.resource("", "persistentvolumeclaims")
        self.pv_res = ctx.resource("", "persistentvolumes")
        self.storage_dir = ctx.config.local_storage_path

    def setup(self) -> None:
        inf = self.ctx.informers
        self.claims = inf.informer("", "persistentvolumeclaims")
        self.volumes = inf.informer("", "persistentvolumes")
        self.classes = inf.informer("storage.k8s.io", "storageclasses")
        self.claims.add_handler(self._on_claim)
        self.volumes.add_handler(self._on_volume)

    def _on_claim(self, etype: str, old: dict | None, new: dict | None) -> None:
        if new is not None and _provisioner_of(new) == PROVISIONER:
            md = new["metadata"]
            self.enqueue(f"claim:{md['namespace']}/{md['name']}")

    def _on_volume(self, etype: str, old: dict | None, new: dict | None) -> None:
        if new is not None and annotations(new).get(ANN_PROVISIONED_BY) == PROVISIONER:
            self.enqueue(f"volume:{new['metadata']['name']}")

    async def reconcile(self, key: str) -> None:
        await self.claims.synced.wait()
        await self.volumes.synced.wait()
        await self.classes.synced.wait()
        kind, _, rest = key.partition(":")
        if kind == "claim":
            ns, name = split_key(rest)
            claim = self.claims.get(ns, name)
            if claim is not None:
                await self.provision(claim)
        else:
            volume = self.volumes.get(None, rest)
            if volume is not None:
                await self.delete_released(volume)

    # ------------------------------------------------------------ provisioning

    def _wants_volume(self, claim: dict) -> bool:
        return _provisioner_of(claim) == PROVISIONER and \
            not (claim.get("spec") or {}).get("volumeName") and \
            not claim["metadata"].get("deletionTimestamp") and \
            self.volumes.get(None, volume_name(claim)) is None

    async def provision(self, claim: dict) -> None:
        if not self._wants_volume(claim):
            return
        cls_name = claim_class(claim)
        sc = self.classes.get(None, cls_name)
        if sc is None or sc.get("provisioner") != PROVISIONER:
            return
        node = annotations(claim).get(ANN_SELECTED_NODE)
        modes = (claim.get("spec") or {}).get("accessModes") or []
        problem = ""
        if not node:
            problem = "configuration error, no node was specified"
        elif any(m not in _ACCESS_MODES for m in modes):
            problem = "NodePath only supports ReadWriteOnce and ReadWriteOncePod (1.22+) " \
                      "access modes"
        elif (claim.get("spec") or {}).get("volumeMode") == "Block":
            problem = "Block volume mode is not supported"
        if problem:
            await self._event(claim, "Warning", "ProvisioningFailed",
                              f'failed to provision volume with StorageClass "{cls_name}": '
                              f"{problem}")
            return
        md = claim["metadata"]
        await self._event(claim, "Normal", "Provisioning", "External provisioner is "
                          f'provisioning volume for claim "{md["namespace"]}/{md["name"]}"')
        pv = self._volume_for(claim, sc, node)
        try:
            await self.registry.create(self.pv_res, None, pv)
        except errors.StatusError as e:
            if e.code != 409:
                await self._event(claim, "Warning", "ProvisioningFailed",
                                  f'failed to provision volume with StorageClass "{cls_name}": '
                                  f"{e.message}")
                raise
            return
        log.info("provisioned %s for claim %s/%s on node %s at %s", pv["metadata"]["name"],
                 md["namespace"], md["name"], node, pv["spec"]["hostPath"]["path"])
        await self._event(claim, "Normal", "ProvisioningSucceeded",
                          f"Successfully provisioned volume {pv['metadata']['name']}")

    def _volume_for(self, claim: dict, sc: dict, node: str) -> dict:
        spec = claim.get("spec") or {}
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        pv_spec = {
            "capacity": {"storage": storage},
            "accessModes": list(spec.get("accessModes") or []),
            "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy") or "Delete",
            "storageClassName": claim_class(claim),
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "claimRef": claim_ref(claim),
            "hostPath": {"path": volume_path(self.storage_dir, claim),
                         "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
        }
        if sc.get("mountOptions"):
            pv_spec["mountOptions"] = list(sc["mountOptions"])
        return {"apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": volume_name(claim),
                             "annotations": {ANN_PROVISIONED_BY: PROVISIONER},
                             "finalizers": [CLEANUP_FINALIZER]},
                "spec": pv_spec}

    # ------------------------------------------------------------ deletion

    async def delete_released(self, volume: dict) -> None:
        """A Released volume of ours under Delete: the PV is deleted; its finalizer keeps it
        (Terminating) until the node's agent has removed the directory and dropped it
        (server/edge/upstream.py), which waits for a node that is offline."""
        spec = volume.get("spec") or {}
        if (volume.get("status") or {}).get("phase") != "Released" or \
                spec.get("persistentVolumeReclaimPolicy") != "Delete" or \
                volume["metadata"].get("deletionTimestamp"):
            return
        name = volume["metadata"]["name"]
        try:
            await self.registry.delete(self.pv_res, None, name,
                                       {"preconditions": {"uid": volume["metadata"]["uid"]}})
        except errors.StatusError as e:
            if e.code not in (404, 409):
                raise
            return
        log.info("deleted released volume %s (%s)", name, (spec.get("hostPath") or {})
                 .get("path"))

    async def _event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        await self.ctx.recorder.record(obj, type_, reason, message, component=COMPONENT)
