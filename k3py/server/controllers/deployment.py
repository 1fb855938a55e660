"""DeploymentController: ReplicaSets per pod-template hash, RollingUpdate/Recreate, history.

Follows kube-controller-manager's deployment sync: scaling events, rollouts, cleanup, status."""

from __future__ import annotations

import logging

from k3py.api import errors
from k3py.api.objects import controller_ref, deepcopy, make_controller_ref, now_rfc3339, parse_time
from k3py.server.controllers.base import Controller, object_key
from k3py.server.controllers.workloads_common import (
    OWNER_INDEX,
    delete_exact,
    get_condition,
    is_terminating,
    now_dt,
    owned_by,
    owner_index,
    parse_int,
    resolve_int_or_percent,
    selector_matches,
    set_condition,
    template_hash,
)

__all__ = ["DeploymentController", "surge_and_unavailable", "new_rs_replicas",
           "equal_ignore_hash", "HASH_LABEL", "REVISION"]

log = logging.getLogger("k3py.controllers.deployment")

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
_SKIP_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", REVISION, DESIRED,
                     MAX_REPLICAS, REVISION_HISTORY)
COMPONENT = "deployment-controller"


# ------------------------------------------------------------------ pure helpers

def replicas_of(obj: dict) -> int:
    return parse_int((obj.get("spec") or {}).get("replicas"), 1)


def surge_and_unavailable(d: dict) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved against spec.replicas; surge rounds up and
    unavailable rounds down; both zero becomes unavailable=1 like upstream."""
    spec = d.get("spec") or {}
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0, 0
    ru = strategy.get("rollingUpdate") or {}
    want = replicas_of(d)
    surge = resolve_int_or_percent(ru.get("maxSurge"), want, True)
    unavail = resolve_int_or_percent(ru.get("maxUnavailable"), want, False)
    if surge == 0 and unavail == 0:
        unavail = 1
    return surge, min(unavail, want)


def new_rs_replicas(d: dict, all_rs: list[dict], new_rs: dict | None) -> int:
    """How many replicas the new ReplicaSet may have right now."""
    want = replicas_of(d)
    if ((d.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate":
        return want
    cur_new = replicas_of(new_rs) if new_rs else 0
    if cur_new >= want:
        return want
    surge, _ = surge_and_unavailable(d)
    current = sum(replicas_of(rs) for rs in all_rs)
    max_total = want + surge
    if current >= max_total:
        return cur_new
    return cur_new + max(0, min(max_total - current, want - cur_new))


def strip_hash(template: dict | None) -> dict:
    t = deepcopy(template or {})
    labels = (t.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return t


def equal_ignore_hash(a: dict | None, b: dict | None) -> bool:
    return strip_hash(a) == strip_hash(b)


def revision_of(rs: dict) -> int:
    return parse_int(((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION))


def created_key(rs: dict) -> tuple:
    t = parse_time(rs["metadata"].get("creationTimestamp"))
    return (t.timestamp() if t else 0.0, rs["metadata"]["name"])


def _status_int(rs: dict, field: str) -> int:
    return parse_int((rs.get("status") or {}).get(field))


# ------------------------------------------------------------------ controller

class DeploymentController(Controller):
    name = "deployment-controller"
    workers = 4

    def setup(self) -> None:
        self.d_inf = self.ctx.informers.informer("apps", "deployments")
        self.rs_inf = self.ctx.informers.informer("apps", "replicasets")
        self.rs_inf.add_index(OWNER_INDEX, owner_index)
        self.d_res = self.ctx.resource("apps", "deployments")
        self.rs_res = self.ctx.resource("apps", "replicasets")
        self.d_inf.add_handler(self._on_d)
        self.rs_inf.add_handler(self._on_rs)

    def _on_d(self, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old
        if obj is not None:
            self.enqueue(object_key(obj))

    def _on_rs(self, etype: str, old: dict | None, new: dict | None) -> None:
        for rs in (old, new):
            if rs is None:
                continue
            ref = controller_ref(rs)
            ns = rs["metadata"].get("namespace")
            if ref and ref.get("kind") == "Deployment":
                self.enqueue(f"{ns}/{ref.get('name')}")
            elif ref is None:
                labels = rs["metadata"].get("labels") or {}
                for d in self.d_inf.list(ns):
                    if selector_matches((d.get("spec") or {}).get("selector"), labels):
                        self.enqueue(object_key(d))

    async def _record(self, d: dict, reason: str, msg: str, type_: str = "Normal") -> None:
        await self.ctx.recorder.record(d, type_, reason, msg, component=COMPONENT)

    # ------------------------------------------------------------ reconcile

    async def reconcile(self, key: str) -> None:
        ns, _, name = key.partition("/")
        cached = self.d_inf.get(ns, name)
        if cached is None:
            return
        d = deepcopy(cached)
        spec = d.get("spec") or {}
        selector = spec.get("selector") or {}
        if not selector.get("matchLabels") and not selector.get("matchExpressions"):
            await self._record(d, "SelectingAll", "This deployment is selecting all pods. "
                               "A non-empty selector is required.", "Warning")
            return
        all_rs = await self._claim_replicasets(d)
        if is_terminating(d):
            await self._sync_status(d, all_rs, None, msg=None)
            return
        new_rs, olds = self._split(d, all_rs)
        if spec.get("paused"):
            if self._is_scaling_event(d, all_rs):
                await self._scale(d, new_rs, olds)
            await self._cleanup(d, olds)
            await self._sync_status(d, all_rs, new_rs, msg=None, paused=True)
            return
        if self._is_scaling_event(d, all_rs) and new_rs is not None:
            await self._scale(d, new_rs, olds)
            all_rs = self._owned(d)
            new_rs, olds = self._split(d, all_rs)
        new_rs, created = await self._ensure_new_rs(d, new_rs, olds, all_rs)
        all_rs = [r for r in all_rs if r["metadata"]["uid"] != new_rs["metadata"]["uid"]]
        all_rs.append(new_rs)
        if (spec.get("strategy") or {}).get("type") == "Recreate":
            await self._rollout_recreate(d, new_rs, olds)
        else:
            await self._rollout_rolling(d, new_rs, olds, all_rs)
        all_rs = self._owned(d) or all_rs
        new_rs, olds = self._split(d, all_rs)
        if self._complete(d, all_rs, new_rs):
            await self._cleanup(d, olds)
        await self._sync_status(d, all_rs, new_rs, msg="created" if created else "found")

    def _owned(self, d: dict) -> list[dict]:
        return [rs for rs in owned_by(self.rs_inf, d)
                if not is_terminating(rs)]

    def _split(self, d: dict, all_rs: list[dict]) -> tuple[dict | None, list[dict]]:
        template = (d.get("spec") or {}).get("template")
        matches = sorted((rs for rs in all_rs
                          if equal_ignore_hash((rs.get("spec") or {}).get("template"), template)),
                         key=created_key)
        new_rs = matches[0] if matches else None
        olds = [rs for rs in all_rs if new_rs is None or rs["metadata"]["uid"] !=
                new_rs["metadata"]["uid"]]
        return new_rs, olds

    async def _claim_replicasets(self, d: dict) -> list[dict]:
        uid = d["metadata"]["uid"]
        selector = (d.get("spec") or {}).get("selector")
        out = []
        for rs in self.rs_inf.list(d["metadata"]["namespace"]):
            ref = controller_ref(rs)
            if ref is not None:
                if ref.get("uid") == uid and not is_terminating(rs):
                    out.append(rs)
                continue
            if is_terminating(d) or is_terminating(rs) or \
                    not selector_matches(selector, rs["metadata"].get("labels")):
                continue

            def adopt(cur: dict) -> dict | None:
                if controller_ref(cur) is not None:
                    return None
                cur["metadata"].setdefault("ownerReferences", []).append(make_controller_ref(d))
                return cur
            got = await self.registry.update_with(self.rs_res, rs["metadata"]["namespace"],
                                                  rs["metadata"]["name"], adopt)
            if got is not None:
                out.append(got)
        return out

    def _is_scaling_event(self, d: dict, all_rs: list[dict]) -> bool:
        want = replicas_of(d)
        for rs in all_rs:
            if replicas_of(rs) <= 0:
                continue
            desired = ((rs["metadata"].get("annotations") or {}).get(DESIRED))
            if desired is not None and parse_int(desired) != want:
                return True
        return False

    # ------------------------------------------------------------ replica sets

    async def _scale_rs(self, d: dict, rs: dict, n: int) -> dict:
        surge, _ = surge_and_unavailable(d)
        want = replicas_of(d)
        annotations_ok = ((rs["metadata"].get("annotations") or {}).get(DESIRED) == str(want)
                          and (rs["metadata"].get("annotations") or {}).get(MAX_REPLICAS)
                          == str(want + surge))
        if replicas_of(rs) == n and annotations_ok:
            return rs

        def mutate(cur: dict) -> dict | None:
            cur.setdefault("spec", {})["replicas"] = n
            ann = cur["metadata"].setdefault("annotations", {})
            ann[DESIRED] = str(want)
            ann[MAX_REPLICAS] = str(want + surge)
            return cur
        old_n = replicas_of(rs)
        out = await self.registry.update_with(self.rs_res, rs["metadata"]["namespace"],
                                              rs["metadata"]["name"], mutate)
        if out is None:
            return rs
        if old_n != n:
            verb = "up" if n > old_n else "down"
            await self._record(d, "ScalingReplicaSet",
                               f"Scaled {verb} replica set {rs['metadata']['name']} to {n}")
        return out

    async def _scale(self, d: dict, new_rs: dict | None, olds: list[dict]) -> None:
        want = replicas_of(d)
        active = [rs for rs in ([new_rs] if new_rs else []) + olds if replicas_of(rs) > 0]
        if len(active) <= 1:
            target = active[0] if active else new_rs
            if target is not None:
                await self._scale_rs(d, target, want)
            return
        if new_rs is not None and replicas_of(new_rs) == want and \
                _status_int(new_rs, "availableReplicas") == want:
            for rs in olds:
                await self._scale_rs(d, rs, 0)
            return
        # proportional scaling across the active sets, leftovers to the newest
        surge, _ = surge_and_unavailable(d)
        allowed = want + surge
        current = sum(replicas_of(rs) for rs in active)
        delta = allowed - current
        if delta == 0:
            return
        ordered = sorted(active, key=created_key, reverse=delta > 0)
        sizes = {rs["metadata"]["uid"]: replicas_of(rs) for rs in ordered}
        added = 0
        for rs in ordered:
            share = (replicas_of(rs) * delta) // current if current else 0
            if delta < 0:
                share = -((replicas_of(rs) * -delta) // current)
            sizes[rs["metadata"]["uid"]] += share
            added += share
        first = ordered[0]["metadata"]["uid"]
        sizes[first] = max(0, sizes[first] + (delta - added))
        for rs in ordered:
            await self._scale_rs(d, rs, max(0, sizes[rs["metadata"]["uid"]]))

    async def _ensure_new_rs(self, d: dict, new_rs: dict | None, olds: list[dict],
                             all_rs: list[dict]) -> tuple[dict, bool]:
        max_old = max((revision_of(rs) for rs in olds), default=0)
        new_rev = str(max_old + 1)
        surge, _ = surge_and_unavailable(d)
        want = replicas_of(d)
        d_ann = d["metadata"].get("annotations") or {}
        if new_rs is not None:
            ann = new_rs["metadata"].get("annotations") or {}
            cur_rev = ann.get(REVISION)
            needs_rev = revision_of(new_rs) <= max_old
            if needs_rev or ann.get(DESIRED) != str(want) or \
                    ann.get(MAX_REPLICAS) != str(want + surge) or \
                    any(ann.get(k) != v for k, v in d_ann.items() if k not in _SKIP_ANNOTATIONS):
                def mutate(cur: dict) -> dict | None:
                    a = cur["metadata"].setdefault("annotations", {})
                    for k, v in d_ann.items():
                        if k not in _SKIP_ANNOTATIONS:
                            a[k] = v
                    if needs_rev:
                        if cur_rev:
                            hist = [h for h in (a.get(REVISION_HISTORY) or "").split(",") if h]
                            a[REVISION_HISTORY] = ",".join(hist + [cur_rev])
                        a[REVISION] = new_rev
                    a[DESIRED] = str(want)
                    a[MAX_REPLICAS] = str(want + surge)
                    return cur
                out = await self.registry.update_with(
                    self.rs_res, new_rs["metadata"]["namespace"], new_rs["metadata"]["name"],
                    mutate)
                new_rs = out or new_rs
            await self._set_deployment_revision(d, revision_of(new_rs))
            return new_rs, False
        collision = parse_int((d.get("status") or {}).get("collisionCount"))
        for _ in range(10):
            h = template_hash((d.get("spec") or {}).get("template"), collision or None)
            rs = self._build_rs(d, h, new_rev, all_rs)
            try:
                created = await self.registry.create(self.rs_res, d["metadata"]["namespace"], rs)
            except errors.StatusError as e:
                if e.code != 409:
                    raise
                existing = await self.registry.try_get(
                    self.rs_res, d["metadata"]["namespace"], rs["metadata"]["name"])
                if existing is not None and is_controlled_by_d(existing, d) and \
                        equal_ignore_hash((existing.get("spec") or {}).get("template"),
                                          (d.get("spec") or {}).get("template")):
                    return existing, False
                collision += 1
                await self._set_collision(d, collision)
                continue
            if replicas_of(created) > 0:
                await self._record(d, "ScalingReplicaSet",
                                   f"Scaled up replica set {created['metadata']['name']} "
                                   f"to {replicas_of(created)}")
            await self._set_deployment_revision(d, int(new_rev))
            return created, True
        raise errors.conflict("apps", "replicasets", d["metadata"]["name"],
                              "too many hash collisions")

    def _build_rs(self, d: dict, h: str, rev: str, all_rs: list[dict]) -> dict:
        spec = d.get("spec") or {}
        template = deepcopy(spec.get("template") or {})
        tmd = template.setdefault("metadata", {})
        tmd["labels"] = dict(tmd.get("labels") or {}, **{HASH_LABEL: h})
        selector = deepcopy(spec.get("selector") or {})
        selector["matchLabels"] = dict(selector.get("matchLabels") or {}, **{HASH_LABEL: h})
        surge, _ = surge_and_unavailable(d)
        want = replicas_of(d)
        ann = {k: v for k, v in (d["metadata"].get("annotations") or {}).items()
               if k not in _SKIP_ANNOTATIONS}
        ann.update({REVISION: rev, DESIRED: str(want), MAX_REPLICAS: str(want + surge)})
        rs_spec = {"replicas": 0, "minReadySeconds": parse_int(spec.get("minReadySeconds")),
                   "selector": selector, "template": template}
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": f"{d['metadata']['name']}-{h}",
                           "namespace": d["metadata"]["namespace"],
                           "labels": dict(tmd["labels"]), "annotations": ann,
                           "ownerReferences": [make_controller_ref(d)]},
              "spec": rs_spec}
        rs_spec["replicas"] = new_rs_replicas(d, all_rs, None)
        return rs

    async def _set_deployment_revision(self, d: dict, rev: int) -> None:
        if (d["metadata"].get("annotations") or {}).get(REVISION) == str(rev):
            return

        def mutate(cur: dict) -> dict | None:
            a = cur["metadata"].setdefault("annotations", {})
            if a.get(REVISION) == str(rev):
                return None
            a[REVISION] = str(rev)
            return cur
        await self.registry.update_with(self.d_res, d["metadata"]["namespace"],
                                        d["metadata"]["name"], mutate)

    async def _set_collision(self, d: dict, n: int) -> None:
        def mutate(cur: dict) -> dict | None:
            cur.setdefault("status", {})["collisionCount"] = n
            return cur
        await self.registry.update_with(self.d_res, d["metadata"]["namespace"],
                                        d["metadata"]["name"], mutate, subresource="status")
        d.setdefault("status", {})["collisionCount"] = n

    # ------------------------------------------------------------ strategies

    async def _rollout_rolling(self, d: dict, new_rs: dict, olds: list[dict],
                               all_rs: list[dict]) -> None:
        want = replicas_of(d)
        target = new_rs_replicas(d, all_rs, new_rs)
        if replicas_of(new_rs) > want:
            target = want
        if target != replicas_of(new_rs):
            new_rs = await self._scale_rs(d, new_rs, target)
            return
        await self._scale_rs(d, new_rs, target)  # keeps annotations current
        old_count = sum(replicas_of(rs) for rs in olds)
        if old_count == 0:
            return
        all_count = old_count + replicas_of(new_rs)
        _, unavail = surge_and_unavailable(d)
        min_available = want - unavail
        new_unavailable = replicas_of(new_rs) - _status_int(new_rs, "availableReplicas")
        max_scaled_down = all_count - min_available - new_unavailable
        if max_scaled_down <= 0:
            return
        # first drop unhealthy old replicas, then healthy ones down to minAvailable
        cleaned = 0
        olds = sorted(olds, key=created_key)
        current = {rs["metadata"]["uid"]: replicas_of(rs) for rs in olds}
        for rs in olds:
            if cleaned >= max_scaled_down:
                break
            n = current[rs["metadata"]["uid"]]
            unhealthy = n - _status_int(rs, "availableReplicas")
            if n == 0 or unhealthy <= 0:
                continue
            drop = min(unhealthy, max_scaled_down - cleaned)
            current[rs["metadata"]["uid"]] = n - drop
            cleaned += drop
            await self._scale_rs(d, rs, n - drop)
        available = sum(min(_status_int(rs, "availableReplicas"), current[rs["metadata"]["uid"]])
                        for rs in olds) + _status_int(new_rs, "availableReplicas")
        total_down = min(available - min_available, max_scaled_down - cleaned)
        for rs in olds:
            if total_down <= 0:
                break
            n = current[rs["metadata"]["uid"]]
            if n == 0:
                continue
            drop = min(n, total_down)
            total_down -= drop
            await self._scale_rs(d, rs, n - drop)

    async def _rollout_recreate(self, d: dict, new_rs: dict, olds: list[dict]) -> None:
        active_olds = [rs for rs in olds if replicas_of(rs) > 0]
        for rs in active_olds:
            await self._scale_rs(d, rs, 0)
        if active_olds or any(_status_int(rs, "replicas") > 0 for rs in olds):
            return  # wait for old pods to go away
        await self._scale_rs(d, new_rs, replicas_of(d))

    async def _cleanup(self, d: dict, olds: list[dict]) -> None:
        limit = (d.get("spec") or {}).get("revisionHistoryLimit")
        limit = 10 if limit is None else parse_int(limit, 10)
        dead = sorted((rs for rs in olds if replicas_of(rs) == 0 and
                       _status_int(rs, "replicas") == 0 and not is_terminating(rs) and
                       parse_int((rs.get("status") or {}).get("observedGeneration")) >=
                       parse_int(rs["metadata"].get("generation"), 1)),
                      key=lambda r: (revision_of(r), created_key(r)))
        for rs in dead[:max(0, len(dead) - limit)]:
            await delete_exact(self.registry, self.rs_res, rs)

    # ------------------------------------------------------------ status

    def _complete(self, d: dict, all_rs: list[dict], new_rs: dict | None) -> bool:
        want = replicas_of(d)
        if new_rs is None:
            return False
        updated = _status_int(new_rs, "replicas")
        total = sum(_status_int(rs, "replicas") for rs in all_rs)
        avail = sum(_status_int(rs, "availableReplicas") for rs in all_rs)
        return updated == want and total == want and avail == want and \
            replicas_of(new_rs) == want

    async def _sync_status(self, d: dict, all_rs: list[dict], new_rs: dict | None,
                           msg: str | None, paused: bool = False) -> None:
        want = replicas_of(d)
        _, unavail = surge_and_unavailable(d)
        total = sum(_status_int(rs, "replicas") for rs in all_rs)
        avail = sum(_status_int(rs, "availableReplicas") for rs in all_rs)
        st: dict = {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": total,
            "updatedReplicas": _status_int(new_rs, "replicas") if new_rs else 0,
            "readyReplicas": sum(_status_int(rs, "readyReplicas") for rs in all_rs),
            "availableReplicas": avail,
            "unavailableReplicas": max(want - avail, 0),
        }
        old = d.get("status") or {}
        now = now_rfc3339()
        key = object_key(d)

        def mutate(cur: dict) -> dict | None:
            status = cur.get("status") or {}
            before = deepcopy(status)
            progressed = any(status.get(k, 0) != v for k, v in st.items()
                             if k != "observedGeneration")
            status.update(st)
            for k in ("readyReplicas", "availableReplicas", "unavailableReplicas",
                      "updatedReplicas", "replicas"):
                if not status.get(k) and k != "replicas":
                    status.pop(k, None)
            if avail >= want - unavail:
                set_condition(status, "Available", "True", "MinimumReplicasAvailable",
                              "Deployment has minimum availability.", now)
            else:
                set_condition(status, "Available", "False", "MinimumReplicasUnavailable",
                              "Deployment does not have minimum availability.", now)
            self._progressing(cur, status, all_rs, new_rs, msg, paused, progressed, now, key)
            if status == before:
                return None
            cur["status"] = status
            return cur
        if old.get("observedGeneration") == st["observedGeneration"] and \
                all(old.get(k, 0) == v for k, v in st.items()) and not msg and not paused and \
                not self._deadline_due(d):
            return
        await self.registry.update_with(self.d_res, d["metadata"]["namespace"],
                                        d["metadata"]["name"], mutate, subresource="status")

    def _deadline_due(self, d: dict) -> bool:
        cond = get_condition(d, "Progressing")
        deadline = (d.get("spec") or {}).get("progressDeadlineSeconds")
        if not cond or deadline is None or cond.get("reason") in (
                "NewReplicaSetAvailable", "ProgressDeadlineExceeded"):
            return False
        t = parse_time(cond.get("lastUpdateTime"))
        return bool(t and (now_dt() - t).total_seconds() > parse_int(deadline))

    def _progressing(self, d: dict, status: dict, all_rs: list[dict], new_rs: dict | None,
                     msg: str | None, paused: bool, progressed: bool, now: str,
                     key: str) -> None:
        cond = get_condition({"status": status}, "Progressing")
        if paused:
            if not cond or cond.get("reason") != "DeploymentPaused":
                set_condition(status, "Progressing", "Unknown", "DeploymentPaused",
                              "Deployment is paused", now)
            return
        deadline = (d.get("spec") or {}).get("progressDeadlineSeconds")
        if new_rs is None:
            return
        rs_name = new_rs["metadata"]["name"]
        if self._complete(d, all_rs, new_rs):
            set_condition(status, "Progressing", "True", "NewReplicaSetAvailable",
                          f'ReplicaSet "{rs_name}" has successfully progressed.', now)
            return
        if cond and cond.get("reason") == "DeploymentPaused":
            set_condition(status, "Progressing", "Unknown", "DeploymentResumed",
                          "Deployment is resumed", now)
            return
        if msg == "created" and (not cond or cond.get("message") !=
                                 f'Created new replica set "{rs_name}"'):
            set_condition(status, "Progressing", "True", "NewReplicaSetCreated",
                          f'Created new replica set "{rs_name}"', now)
        elif progressed or not cond or cond.get("reason") in ("NewReplicaSetAvailable",
                                                              "DeploymentResumed"):
            set_condition(status, "Progressing", "True", "ReplicaSetUpdated",
                          f'ReplicaSet "{rs_name}" is progressing.', now)
        elif deadline is not None and cond.get("status") == "True":
            t = parse_time(cond.get("lastUpdateTime"))
            if t and (now_dt() - t).total_seconds() > parse_int(deadline):
                set_condition(status, "Progressing", "False", "ProgressDeadlineExceeded",
                              f'ReplicaSet "{rs_name}" has timed out progressing.', now)
        if deadline is not None:
            self.enqueue(key, after=parse_int(deadline) + 1.0)


def is_controlled_by_d(rs: dict, d: dict) -> bool:
    ref = controller_ref(rs)
    return bool(ref and ref.get("uid") == d["metadata"]["uid"])
