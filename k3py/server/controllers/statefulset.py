"""StatefulSetController: ordinal pods `<sts>-<i>` with stable identity and per-pod PVCs.

OrderedReady creates i+1 only once i is Ready and scales down from the highest ordinal."""

from __future__ import annotations

import logging

from k3py.api import errors
from k3py.api.objects import deepcopy
from k3py.server.controllers.base import Controller, object_key
from k3py.server.controllers.workloads_common import (
    RevisionHistory,
    delete_exact,
    is_terminating,
    owned_by,
    owner_key_of,
    parse_int,
    pod_active,
    pod_available,
    pod_from_template,
    pod_ready,
    template_hash,
    watch_pods,
    write_status,
)

__all__ = ["StatefulSetController", "ordinal_of"]

log = logging.getLogger("k3py.controllers.statefulset")

REV_LABEL = "controller-revision-hash"


def ordinal_of(sts_name: str, pod_name: str) -> int | None:
    prefix = sts_name + "-"
    if not pod_name.startswith(prefix):
        return None
    tail = pod_name[len(prefix):]
    return int(tail) if tail.isdigit() else None


class StatefulSetController(Controller):
    name = "statefulset-controller"
    workers = 2

    def setup(self) -> None:
        self.sts_inf = self.ctx.informers.informer("apps", "statefulsets")
        self.pod_inf, self.pod_res = watch_pods(self.ctx)
        self.history = RevisionHistory(self.ctx)
        self.sts_res = self.ctx.resource("apps", "statefulsets")
        self.pvc_res = self.ctx.resource("", "persistentvolumeclaims")
        self.sts_inf.add_handler(self._on_sts)
        self.pod_inf.add_handler(self._on_pod)

    def _on_sts(self, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old
        if obj is not None:
            self.enqueue(object_key(obj))

    def _on_pod(self, etype: str, old: dict | None, new: dict | None) -> None:
        key = owner_key_of(new if new is not None else old, "StatefulSet")
        if key is not None:
            self.enqueue(key)

    async def reconcile(self, key: str) -> None:
        ns, _, name = key.partition("/")
        cached = self.sts_inf.get(ns, name)
        if cached is None:
            return
        sts = deepcopy(cached)
        spec = sts.get("spec") or {}
        want = parse_int(spec.get("replicas"), 1)
        start = parse_int((spec.get("ordinals") or {}).get("start"))
        parallel = spec.get("podManagementPolicy") == "Parallel"
        rev = f"{name}-{template_hash(spec.get('template'))}"
        pods = {}
        for p in owned_by(self.pod_inf, sts):
            i = ordinal_of(name, p["metadata"]["name"])
            if i is not None:
                pods[i] = p
        cur_rev = (sts.get("status") or {}).get("currentRevision") or rev
        if not is_terminating(sts):
            in_use = {cur_rev} | {(p["metadata"].get("labels") or {}).get(REV_LABEL) or ""
                                  for p in pods.values()}
            await self.history.sync(sts, rev, rev, in_use)
            await self._manage(sts, pods, want, start, parallel, rev, cur_rev)
        await self._status(sts, pods, start, want, rev, cur_rev)

    async def _manage(self, sts: dict, pods: dict[int, dict], want: int, start: int,
                      parallel: bool, rev: str, cur_rev: str) -> None:
        wanted = range(start, start + want)
        strategy = (sts.get("spec") or {}).get("updateStrategy") or {}
        rolling = (strategy.get("type") or "RollingUpdate") == "RollingUpdate"
        partition = parse_int((strategy.get("rollingUpdate") or {}).get("partition"))
        # replace failed/succeeded pods; create missing ones in order
        for i in wanted:
            p = pods.get(i)
            if p is not None and not pod_active(p) and not is_terminating(p):
                await self._delete(sts, p)
                if not parallel:
                    return
                continue
            if p is None:
                # below the partition a pod is recreated at the current revision (upstream)
                if rolling and i - start < partition and cur_rev != rev:
                    await self._create(sts, i, cur_rev)
                else:
                    await self._create(sts, i, rev)
                if not parallel:
                    return
                continue
            if is_terminating(p) or (not parallel and not pod_ready(p)):
                if not parallel:
                    return
        # scale down from the highest ordinal, one at a time unless Parallel
        extra = sorted((i for i in pods if i not in wanted), reverse=True)
        for i in extra:
            p = pods[i]
            if is_terminating(p):
                if not parallel:
                    return
                continue
            await self._delete(sts, p)
            if not parallel:
                return
        # rolling update: replace outdated pods from the highest ordinal, one at a time
        if not rolling:
            return
        for i in sorted(wanted, reverse=True):
            p = pods.get(i)
            if p is None or i - start < partition:
                continue
            if (p["metadata"].get("labels") or {}).get(REV_LABEL) != rev:
                if not is_terminating(p):
                    await self._delete(sts, p)
                return
            if not pod_ready(p):
                return

    def _template_at(self, sts: dict, rev: str) -> dict:
        """The pod template recorded in ControllerRevision `rev` (the spec's if unknown)."""
        for cr in self.history.owned(sts):
            if cr["metadata"]["name"] == rev:
                t = deepcopy(((cr.get("data") or {}).get("spec") or {}).get("template") or {})
                t.pop("$patch", None)
                if t:
                    return t
        return (sts.get("spec") or {}).get("template") or {}

    async def _create(self, sts: dict, i: int, rev: str) -> None:
        spec = sts.get("spec") or {}
        name, ns = sts["metadata"]["name"], sts["metadata"]["namespace"]
        pod_name = f"{name}-{i}"
        pod = pod_from_template(sts, self._template_at(sts, rev), name=pod_name)
        labels = pod["metadata"]["labels"]
        labels["statefulset.kubernetes.io/pod-name"] = pod_name
        labels["apps.kubernetes.io/pod-index"] = str(i)
        labels[REV_LABEL] = rev
        pod["spec"]["hostname"] = pod_name
        if spec.get("serviceName"):
            pod["spec"]["subdomain"] = spec["serviceName"]
        vols = pod["spec"].setdefault("volumes", [])
        for tmpl in spec.get("volumeClaimTemplates") or []:
            claim = (tmpl.get("metadata") or {}).get("name")
            pvc_name = f"{claim}-{name}-{i}"
            await self._ensure_pvc(sts, tmpl, pvc_name)
            vols[:] = [v for v in vols if v.get("name") != claim]
            vols.append({"name": claim, "persistentVolumeClaim": {"claimName": pvc_name}})
        if not vols:
            pod["spec"].pop("volumes")
        try:
            await self.registry.create(self.pod_res, ns, pod)
        except errors.StatusError as e:
            if e.code == 409:
                return
            await self.ctx.recorder.record(sts, "Warning", "FailedCreate",
                                           f"create Pod {pod_name} in StatefulSet {name} "
                                           f"failed error: {e}", component=self.name)
            raise
        await self.ctx.recorder.record(sts, "Normal", "SuccessfulCreate",
                                       f"create Pod {pod_name} in StatefulSet {name} "
                                       "successful", component=self.name)

    async def _ensure_pvc(self, sts: dict, tmpl: dict, pvc_name: str) -> None:
        ns = sts["metadata"]["namespace"]
        if await self.registry.try_get(self.pvc_res, ns, pvc_name) is not None:
            return
        tmd = tmpl.get("metadata") or {}
        sel = ((sts.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": pvc_name, "namespace": ns,
                            "labels": dict(tmd.get("labels") or {}, **sel)},
               "spec": deepcopy(tmpl.get("spec") or {})}
        if tmd.get("annotations"):
            pvc["metadata"]["annotations"] = dict(tmd["annotations"])
        try:
            await self.registry.create(self.pvc_res, ns, pvc)
        except errors.StatusError as e:
            if e.code != 409:
                raise
            return
        await self.ctx.recorder.record(
            sts, "Normal", "SuccessfulCreate",
            f"create Claim {pvc_name} Pod {pvc_name.rsplit('-', 1)[0]} in StatefulSet "
            f"{sts['metadata']['name']} success", component=self.name)

    async def _delete(self, sts: dict, pod: dict) -> None:
        if not await delete_exact(self.registry, self.pod_res, pod):
            return
        await self.ctx.recorder.record(sts, "Normal", "SuccessfulDelete",
                                       f"delete Pod {pod['metadata']['name']} in StatefulSet "
                                       f"{sts['metadata']['name']} successful",
                                       component=self.name)

    async def _status(self, sts: dict, pods: dict[int, dict], start: int, want: int,
                      rev: str, cur_rev: str) -> None:
        mrs = parse_int((sts.get("spec") or {}).get("minReadySeconds"))
        live = [p for p in pods.values() if pod_active(p)]
        def at(r: str) -> int:
            return sum(1 for p in live if (p["metadata"].get("labels") or {}).get(REV_LABEL) == r)
        ready = sum(1 for p in live if pod_ready(p))
        updated = at(rev)
        # the update is complete (current := update) once every replica is updated and ready
        if updated == want and len(live) == want and ready == want:
            cur_rev = rev
        st = {"replicas": len(live),
              "readyReplicas": ready,
              "availableReplicas": sum(1 for p in live if pod_available(p, mrs)),
              "currentReplicas": at(cur_rev),
              "updatedReplicas": updated,
              "currentRevision": cur_rev, "updateRevision": rev,
              "observedGeneration": sts["metadata"].get("generation", 1)}
        await write_status(self, self.sts_res, sts, st, mrs, "readyReplicas", "availableReplicas",
                           defaults={"collisionCount": 0})
