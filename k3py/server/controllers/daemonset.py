"""DaemonSetController: one pod per eligible node, pinned with required node affinity.

Node eligibility, RollingUpdate (maxUnavailable/maxSurge) and ControllerRevision history."""

from __future__ import annotations

import logging

from k3py.api import errors
from k3py.api.objects import deepcopy
from k3py.server.controllers.base import Controller, object_key
from k3py.server.controllers.deployment import HASH_LABEL
from k3py.server.controllers.workloads_common import (
    REVISION_HASH_LABEL,
    Expectations,
    RevisionHistory,
    claim_candidates,
    claim_pods,
    delete_exact,
    enqueue_when_available,
    is_terminating,
    observe_pod_event,
    owner_handler,
    owner_key_of,
    parse_int,
    pod_active,
    pod_available,
    pod_from_template,
    pod_ready,
    resolve_int_or_percent,
    template_hash,
    watch_pods,
    write_status,
)

__all__ = ["DaemonSetController", "node_eligible", "node_should_run", "tolerates",
           "rolling_budget", "DEFAULT_TOLERATIONS"]

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


def _affinity_matches(pod_spec: dict, node: dict) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    for k, v in (pod_spec.get("nodeSelector") or {}).items():
        if labels.get(k) != v:
            return False
    req = ((((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
            .get("requiredDuringSchedulingIgnoredDuringExecution")) or {})
    terms = req.get("nodeSelectorTerms") or []
    fields = {"metadata.name": node["metadata"]["name"]}
    return not terms or any(
        all(_req_matches(r, labels) for r in t.get("matchExpressions") or []) and
        all(_req_matches(r, fields) for r in t.get("matchFields") or [])
        for t in terms)


def node_should_run(pod_spec: dict, node: dict) -> tuple[bool, bool]:
    """(shouldRun, shouldContinueRunning) like upstream NodeShouldRunDaemonPod: a NoSchedule
    taint stops new daemon pods but leaves running ones; NoExecute evicts them."""
    if not _affinity_matches(pod_spec, node):
        return False, False
    tols = list(pod_spec.get("tolerations") or []) + list(DEFAULT_TOLERATIONS)
    taints = (node.get("spec") or {}).get("taints") or []
    keep = tolerates(tols, [t for t in taints if t.get("effect") == "NoExecute"])
    return keep and tolerates(tols, taints), keep


def node_eligible(pod_spec: dict, node: dict) -> bool:
    return node_should_run(pod_spec, node)[0]


def rolling_budget(ds: dict, desired: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) scaled against desiredNumberScheduled; both round up in
    the DaemonSet controller, and both zero means one unavailable."""
    ru = ((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate") or {}
    surge = resolve_int_or_percent(ru.get("maxSurge"), desired, True, default=0)
    unavail = resolve_int_or_percent(ru.get("maxUnavailable"), desired, True, default=1)
    if surge == 0 and unavail == 0:
        unavail = 1
    return surge, unavail


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


def _hash_of(pod: dict) -> str | None:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(REVISION_HASH_LABEL)


class DaemonSetController(Controller):
    name = "daemonset-controller"
    workers = 2

    def setup(self) -> None:
        self.expectations = Expectations()
        self.ds_inf = self.ctx.informers.informer("apps", "daemonsets")
        self.pod_inf, self.pod_res = watch_pods(self.ctx)
        self.node_inf = self.ctx.informers.informer("", "nodes")
        self.history = RevisionHistory(self.ctx)
        self.ds_res = self.ctx.resource("apps", "daemonsets")
        self.ds_inf.add_handler(owner_handler(self))
        self.pod_inf.add_handler(self._on_pod)
        self.node_inf.add_handler(self._on_node)

    def _on_pod(self, etype: str, old: dict | None, new: dict | None) -> None:
        key = owner_key_of(new if new is not None else old, "DaemonSet")
        if key is None:
            return
        observe_pod_event(self.expectations, key, etype, old, new, delete_counted_once=True)
        self.enqueue(key)
        mrs = parse_int(((self.ds_inf.get(*key.split("/", 1)) or {}).get("spec") or {})
                        .get("minReadySeconds"))
        enqueue_when_available(self, key, mrs, old, new)

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
            self.expectations.forget(key)
            return
        ds = deepcopy(cached)
        spec = ds.get("spec") or {}
        template = spec.get("template") or {}
        h = template_hash(template)
        owned = await claim_pods(self.registry, self.pod_res, ds,
                                 claim_candidates(self.pod_inf, ds), spec.get("selector"))
        by_node: dict[str, list[dict]] = {}
        failed: list[dict] = []
        for p in owned:
            if pod_active(p):
                by_node.setdefault(pod_node(p) or "", []).append(p)
            elif not is_terminating(p) and (p.get("status") or {}).get("phase") == "Failed":
                failed.append(p)
        runs: dict[str, tuple[bool, bool]] = {
            n: node_should_run(template.get("spec") or {}, node)
            for n, node in ((node["metadata"]["name"], node) for node in self.node_inf.list())
            if not is_terminating(node)}
        eligible = {n for n, (run, _) in runs.items() if run}
        if not is_terminating(ds):
            in_use = {f"{name}-{_hash_of(p)}" for ps in by_node.values() for p in ps}
            await self.history.sync(ds, f"{name}-{h}", h, in_use)
            if self.expectations.satisfied(key):
                await self._manage(key, ds, template, h, by_node, runs, failed)
        await self._status(ds, eligible, by_node, h)

    async def _manage(self, key: str, ds: dict, template: dict, h: str,
                      by_node: dict[str, list[dict]], runs: dict[str, tuple[bool, bool]],
                      failed: list[dict]) -> None:
        create: list[str] = []
        delete: list[dict] = list(failed)  # upstream kills failed daemon pods to retry them
        for node_name, (run, keep) in sorted(runs.items()):
            pods = by_node.get(node_name) or []
            if run and not pods:
                create.append(node_name)
            elif not keep:
                delete.extend(pods)
            elif len(pods) > 1:
                # keep the newest-revision, oldest pod; a surge pair is handled by the update
                pods = sorted(pods, key=lambda p: (_hash_of(p) != h,
                                                   p["metadata"].get("creationTimestamp") or ""))
                if not (len(pods) == 2 and _hash_of(pods[0]) == h and _hash_of(pods[1]) != h):
                    delete.extend(pods[1:])
        delete.extend(p for n, ps in by_node.items() if n not in runs for p in ps)
        strategy = (ds.get("spec") or {}).get("updateStrategy") or {}
        if (strategy.get("type") or "RollingUpdate") == "RollingUpdate" and not create:
            more_create, more_delete = self._rolling_update(ds, h, by_node, runs)
            create += more_create
            delete += [p for p in more_delete if p not in delete]
        if not create and not delete:
            return
        self.expectations.expect(key, adds=len(create), dels=len(delete))
        for node_name in create:
            try:
                await self._create(ds, template, node_name, h)
            except Exception:
                self.expectations.observed_add(key)
                raise
        for pod in delete:
            if not await self._delete(ds, pod):
                self.expectations.observed_del(key)

    def _rolling_update(self, ds: dict, h: str, by_node: dict[str, list[dict]],
                        runs: dict[str, tuple[bool, bool]]) -> tuple[list[str], list[dict]]:
        """Upstream's rollingUpdate: replace old pods within maxUnavailable, or with maxSurge
        start the new pod beside the old one and delete the old once the new is available."""
        mrs = parse_int((ds.get("spec") or {}).get("minReadySeconds"))
        desired = sum(1 for run, _ in runs.values() if run)
        surge, max_unavail = rolling_budget(ds, desired)
        unavailable = 0
        candidates: list[dict] = []
        free: list[dict] = []
        surge_nodes: list[str] = []
        surging = 0
        create: list[str] = []
        for node_name, pods in sorted(by_node.items()):
            if not runs.get(node_name, (False, False))[1]:
                continue
            new = [p for p in pods if _hash_of(p) == h]
            old = [p for p in pods if _hash_of(p) != h]
            if new and old:
                if not surge or pod_available(new[0], mrs):
                    free.extend(old)
                else:
                    surging += 1
                unavailable += 1
            elif new:
                if not pod_available(new[0], mrs):
                    unavailable += 1
            elif old:
                if not pod_available(old[0], mrs) and surge:
                    create.append(node_name)
                elif not pod_available(old[0], mrs):
                    free.extend(old)
                elif surge:
                    surge_nodes.append(node_name)
                else:
                    candidates.append(old[0])
        if surge:
            create += surge_nodes[:max(0, surge - surging)]
            return create, free
        budget = max(0, max_unavail - unavailable)
        return [], free + candidates[:budget]

    async def _create(self, ds: dict, template: dict, node_name: str, h: str) -> None:
        pod = pod_from_template(ds, template, generate_name=ds["metadata"]["name"] + "-")
        pod["metadata"]["labels"][REVISION_HASH_LABEL] = h
        pod["metadata"]["labels"].pop(HASH_LABEL, None)
        pin_to_node(pod["spec"], node_name)
        tols = pod["spec"].setdefault("tolerations", [])
        for t in DEFAULT_TOLERATIONS:
            if t not in tols:
                tols.append(dict(t))
        try:
            created = await self.registry.create(self.pod_res, ds["metadata"]["namespace"], pod)
        except errors.StatusError as e:
            await self.ctx.recorder.record(ds, "Warning", "FailedCreate",
                                           f"Error creating: {e.message}", component=self.name)
            raise
        await self.ctx.recorder.record(ds, "Normal", "SuccessfulCreate",
                                       f"Created pod: {created['metadata']['name']}",
                                       component=self.name)

    async def _delete(self, ds: dict, pod: dict) -> bool:
        if not await delete_exact(self.registry, self.pod_res, pod):
            return False
        await self.ctx.recorder.record(ds, "Normal", "SuccessfulDelete",
                                       f"Deleted pod: {pod['metadata']['name']}",
                                       component=self.name)
        return True

    async def _status(self, ds: dict, eligible: set[str], by_node: dict[str, list[dict]],
                      h: str) -> None:
        mrs = parse_int((ds.get("spec") or {}).get("minReadySeconds"))
        scheduled = [n for n in by_node if n in eligible and by_node[n]]
        # per node the pod that counts: the updated one if there is a surge pair
        first = [sorted(by_node[n], key=lambda p: _hash_of(p) != h)[0] for n in scheduled]
        st = {
            "desiredNumberScheduled": len(eligible),
            "currentNumberScheduled": len(scheduled),
            "numberMisscheduled": len([n for n in by_node if n not in eligible]),
            "numberReady": sum(1 for p in first if pod_ready(p)),
            "numberAvailable": sum(1 for p in first if pod_available(p, mrs)),
            "updatedNumberScheduled": sum(1 for p in first if _hash_of(p) == h),
            "observedGeneration": ds["metadata"].get("generation", 1),
        }
        st["numberUnavailable"] = max(0, st["desiredNumberScheduled"] - st["numberAvailable"])
        await write_status(self, self.ds_res, ds, st, mrs, "numberReady", "numberAvailable",
                           omit_zero=("numberAvailable", "numberUnavailable",
                                      "updatedNumberScheduled"))
