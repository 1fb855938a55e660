"""DaemonSetController: one pod per eligible node, pinned with required node affinity.

Eligibility: nodeSelector, required matchFields/matchExpressions, taints vs tolerations."""

from __future__ import annotations

import logging

from k3py.api import errors
from k3py.api.objects import controller_ref, deepcopy
from k3py.server.controllers.base import Controller, object_key
from k3py.server.controllers.deployment import HASH_LABEL
from k3py.server.controllers.workloads_common import (
    OWNER_INDEX,
    claim_pods,
    is_terminating,
    owner_index,
    parse_int,
    pod_active,
    pod_available,
    pod_from_template,
    pod_ready,
    template_hash,
)

__all__ = ["DaemonSetController", "node_eligible", "tolerates", "DEFAULT_TOLERATIONS"]

log = logging.getLogger("k3py.controllers.daemonset")

DEFAULT_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)


def _tol_matches(tol: dict, taint: dict) -> bool:
    if tol.get("effect") and tol["effect"] != taint.get("effect"):
        return False
    if tol.get("key") and tol["key"] != taint.get("key"):
        return False
    if not tol.get("key") and tol.get("operator") != "Exists":
        return False
    if (tol.get("operator") or "Equal") == "Exists":
        return True
    return (tol.get("value") or "") == (taint.get("value") or "")


def tolerates(tolerations: list[dict], taints: list[dict]) -> bool:
    return all(any(_tol_matches(t, taint) for t in tolerations) for taint in taints
               if taint.get("effect") in ("NoSchedule", "NoExecute"))


def _req_matches(req: dict, values: dict) -> bool:
    key, op, vals = req.get("key"), req.get("operator"), req.get("values") or []
    v = values.get(key)
    if op == "In":
        return v is not None and v in vals
    if op == "NotIn":
        return v is None or v not in vals
    if op == "Exists":
        return v is not None
    if op == "DoesNotExist":
        return v is None
    if op in ("Gt", "Lt") and v is not None and vals:
        a, b = parse_int(v), parse_int(vals[0])
        return a > b if op == "Gt" else a < b
    return False


def node_eligible(pod_spec: dict, node: dict) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    for k, v in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    req = ((((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
            .get("requiredDuringSchedulingIgnoredDuringExecution")) or {})
    terms = req.get("nodeSelectorTerms") or []
    fields = {"metadata.name": node["metadata"]["name"]}
    if terms and not any(
            all(_req_matches(r, labels) for r in t.get("matchExpressions") or []) and
            all(_req_matches(r, fields) for r in t.get("matchFields") or [])
            for t in terms):
        return False
    tols = list(pod_spec.get("tolerations") or []) + list(DEFAULT_TOLERATIONS)
    return tolerates(tols, (node.get("spec") or {}).get("taints") or [])


def pin_to_node(spec: dict, node_name: str) -> None:
    """Replace required node affinity with a matchFields term for this node (upstream)."""
    aff = spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
    req = aff.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    field = {"key": "metadata.name", "operator": "In", "values": [node_name]}
    terms = req.get("nodeSelectorTerms") or [{}]
    new_terms = []
    for t in terms:
        t = dict(t)
        t["matchFields"] = [field]
        new_terms.append(t)
    aff["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": new_terms}


def pod_node(pod: dict) -> str | None:
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return spec["nodeName"]
    req = ((((spec.get("affinity") or {}).get("nodeAffinity") or {})
            .get("requiredDuringSchedulingIgnoredDuringExecution")) or {})
    for t in req.get("nodeSelectorTerms") or []:
        for f in t.get("matchFields") or []:
            if f.get("key") == "metadata.name" and f.get("values"):
                return f["values"][0]
    return None


class DaemonSetController(Controller):
    name = "daemonset-controller"
    workers = 2

    def setup(self) -> None:
        self.ds_inf = self.ctx.informers.informer("apps", "daemonsets")
        self.pod_inf = self.ctx.informers.informer("", "pods")
        self.node_inf = self.ctx.informers.informer("", "nodes")
        self.pod_inf.add_index(OWNER_INDEX, owner_index)
        self.ds_res = self.ctx.resource("apps", "daemonsets")
        self.pod_res = self.ctx.resource("", "pods")
        self.ds_inf.add_handler(self._on_ds)
        self.pod_inf.add_handler(self._on_pod)
        self.node_inf.add_handler(self._on_node)

    def _on_ds(self, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old
        if obj is not None:
            self.enqueue(object_key(obj))

    def _on_pod(self, etype: str, old: dict | None, new: dict | None) -> None:
        pod = new if new is not None else old
        ref = controller_ref(pod or {})
        if ref and ref.get("kind") == "DaemonSet":
            self.enqueue(f"{pod['metadata'].get('namespace')}/{ref.get('name')}")

    def _on_node(self, etype: str, old: dict | None, new: dict | None) -> None:
        if etype == "MODIFIED" and old is not None and new is not None and \
                old["metadata"].get("labels") == new["metadata"].get("labels") and \
                (old.get("spec") or {}).get("taints") == (new.get("spec") or {}).get("taints"):
            return
        for ds in self.ds_inf.list():
            self.enqueue(object_key(ds))

    async def reconcile(self, key: str) -> None:
        ns, _, name = key.partition("/")
        cached = self.ds_inf.get(ns, name)
        if cached is None:
            return
        ds = deepcopy(cached)
        spec = ds.get("spec") or {}
        template = spec.get("template") or {}
        tmpl_hash = template_hash(template)
        owned = await claim_pods(self.registry, self.pod_res, ds,
                                 [p for p in self.pod_inf.list(ns) if not is_terminating(p)],
                                 spec.get("selector"))
        by_node: dict[str, list[dict]] = {}
        for p in owned:
            if pod_active(p):
                by_node.setdefault(pod_node(p) or "", []).append(p)
        nodes = {n["metadata"]["name"]: n for n in self.node_inf.list()}
        eligible = {n for n, node in nodes.items()
                    if node_eligible(template.get("spec") or {}, node)}
        rolling = ((spec.get("updateStrategy") or {}).get("type") or "RollingUpdate") == \
            "RollingUpdate"
        if not is_terminating(ds):
            for node_name in sorted(eligible):
                pods = by_node.get(node_name) or []
                if not pods:
                    await self._create(ds, template, node_name, tmpl_hash)
                elif len(pods) > 1:
                    for extra in pods[1:]:
                        await self._delete(ds, extra)
                elif rolling and (pods[0]["metadata"].get("labels") or {}).get(
                        "controller-revision-hash") != tmpl_hash:
                    await self._delete(ds, pods[0])  # recreated on the next sync
            for node_name, pods in by_node.items():
                if node_name not in eligible:
                    for p in pods:
                        await self._delete(ds, p)
        await self._status(ds, eligible, by_node, tmpl_hash)

    async def _create(self, ds: dict, template: dict, node_name: str, h: str) -> None:
        pod = pod_from_template(ds, template, generate_name=ds["metadata"]["name"] + "-")
        pod["metadata"]["labels"]["controller-revision-hash"] = h
        pod["metadata"]["labels"].pop(HASH_LABEL, None)
        pin_to_node(pod["spec"], node_name)
        tols = pod["spec"].setdefault("tolerations", [])
        for t in DEFAULT_TOLERATIONS:
            if t not in tols:
                tols.append(dict(t))
        created = await self.registry.create(self.pod_res, ds["metadata"]["namespace"], pod)
        await self.ctx.recorder.record(ds, "Normal", "SuccessfulCreate",
                                       f"Created pod: {created['metadata']['name']}",
                                       component=self.name)

    async def _delete(self, ds: dict, pod: dict) -> None:
        md = pod["metadata"]
        try:
            await self.registry.delete(self.pod_res, md["namespace"], md["name"],
                                       {"preconditions": {"uid": md.get("uid")}})
        except errors.StatusError as e:
            if e.code not in (404, 409):
                raise
            return
        await self.ctx.recorder.record(ds, "Normal", "SuccessfulDelete",
                                       f"Deleted pod: {md['name']}", component=self.name)

    async def _status(self, ds: dict, eligible: set[str], by_node: dict[str, list[dict]],
                      h: str) -> None:
        mrs = parse_int((ds.get("spec") or {}).get("minReadySeconds"))
        scheduled = [n for n in by_node if n in eligible and by_node[n]]
        first = [by_node[n][0] for n in scheduled]
        st = {
            "desiredNumberScheduled": len(eligible),
            "currentNumberScheduled": len(scheduled),
            "numberMisscheduled": len([n for n in by_node if n not in eligible]),
            "numberReady": sum(1 for p in first if pod_ready(p)),
            "numberAvailable": sum(1 for p in first if pod_available(p, mrs)),
            "updatedNumberScheduled": sum(
                1 for p in first
                if (p["metadata"].get("labels") or {}).get("controller-revision-hash") == h),
            "observedGeneration": ds["metadata"].get("generation", 1),
        }
        st["numberUnavailable"] = max(0, st["desiredNumberScheduled"] - st["numberAvailable"])
        if mrs > 0 and st["numberReady"] > st["numberAvailable"]:
            self.enqueue(object_key(ds), after=1.0)
        cur = ds.get("status") or {}
        if all(cur.get(k, 0) == v for k, v in st.items()):
            return

        def mutate(obj: dict) -> dict | None:
            status = obj.get("status") or {}
            status.update(st)
            for k in ("numberAvailable", "numberUnavailable", "updatedNumberScheduled"):
                if not status.get(k):
                    status.pop(k, None)
            obj["status"] = status
            return obj
        await self.registry.update_with(self.ds_res, ds["metadata"]["namespace"],
                                        ds["metadata"]["name"], mutate, subresource="status")
