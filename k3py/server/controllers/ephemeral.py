"""Upstream's ephemeral volume controller: for each `ephemeral` volume of a pod, the claim
<pod>-<volume> made from its volumeClaimTemplate and owned by the pod (so the garbage
collector deletes it with the pod). The scheduler waits for it like for any claim."""

from __future__ import annotations

import copy

from k3py.api import errors
from k3py.server.controllers.base import Controller, ControllerContext, split_key

__all__ = ["EphemeralVolumeController"]


class EphemeralVolumeController(Controller):
    name = "ephemeral-volume-controller"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.pvc_res = ctx.resource("", "persistentvolumeclaims")

    def setup(self) -> None:
        self.pods = self.ctx.informers.informer("", "pods")
        self.pods.add_handler(self._on_pod)

    def _on_pod(self, etype: str, old: dict | None, new: dict | None) -> None:
        if new is None or (new.get("spec") or {}).get("nodeName"):
            return
        if any(isinstance(v.get("ephemeral"), dict)
               for v in (new.get("spec") or {}).get("volumes") or []):
            md = new["metadata"]
            self.enqueue(f"{md['namespace']}/{md['name']}")

    async def reconcile(self, key: str) -> None:
        ns, name = split_key(key)
        pod = self.pods.get(ns, name)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return
        for vol in (pod.get("spec") or {}).get("volumes") or []:
            template = (vol.get("ephemeral") or {}).get("volumeClaimTemplate")
            if isinstance(template, dict):
                await self._ensure_claim(pod, vol["name"], template)

    async def _ensure_claim(self, pod: dict, volume: str, template: dict) -> None:
        md = pod["metadata"]
        claim_name = f"{md['name']}-{volume}"
        owner = {"apiVersion": "v1", "kind": "Pod", "name": md["name"], "uid": md["uid"],
                 "controller": True, "blockOwnerDeletion": True}
        tmd = template.get("metadata") or {}
        claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                 "metadata": {"name": claim_name, "namespace": md["namespace"],
                              "labels": dict(tmd.get("labels") or {}),
                              "annotations": dict(tmd.get("annotations") or {}),
                              "ownerReferences": [owner]},
                 "spec": copy.deepcopy(template.get("spec") or {})}
        try:
            await self.registry.create(self.pvc_res, md["namespace"], claim)
        except errors.StatusError as e:
            if e.code != 409:
                raise
            existing = await self.registry.try_get(self.pvc_res, md["namespace"], claim_name)
            owners = (existing or {}).get("metadata", {}).get("ownerReferences") or []
            if existing is not None and not any(o.get("uid") == md["uid"] for o in owners):
                await self.ctx.recorder.record(
                    pod, "Warning", "FailedBinding",
                    f'PVC {md["namespace"]}/{claim_name} was not created for pod '
                    f'{md["namespace"]}/{md["name"]} (pod is not owner)',
                    component=self.name)
