"""Shared helpers for the workload controllers: pod readiness, selectors, expectations, hashing.

Pure functions plus a small Expectations tracker, the adopt/create/delete pod plumbing and the
informer-handler and status-write pieces the workload controllers share."""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Callable
from typing import Any

from k3py.api import errors
from k3py.api.objects import controller_ref, deepcopy, make_controller_ref, parse_time
from k3py.api.selectors import label_selector_from_struct
from k3py.server.controllers.base import object_key

__all__ = ["selector_matches", "selector_matcher", "pod_ready", "pod_available", "pod_active", "ready_since",
           "Expectations", "template_hash", "safe_encode", "fnv32a", "pod_from_template",
           "resolve_int_or_percent", "set_condition", "get_condition", "owner_index",
           "OWNER_INDEX", "owned_by", "parse_int", "is_terminating", "claim_pods", "now_dt",
           "REVISION_HASH_LABEL", "revision_data", "RevisionHistory", "watch_pods",
           "owner_handler", "owner_key_of", "observe_pod_event", "enqueue_when_available",
           "delete_exact", "write_status", "ORPHAN_INDEX", "claim_candidates"]

OWNER_INDEX = "controller-uid"
ORPHAN_INDEX = "orphan-namespace"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"


def now_dt() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def parse_int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


# ------------------------------------------------------------------ selectors

def selector_matches(sel: dict | None, labels: dict | None) -> bool:
    """A metav1.LabelSelector struct against labels; an empty/None selector matches nothing
    (controllers treat an empty selector as selecting nothing)."""
    return selector_matcher(sel)(labels)


def selector_matcher(sel: dict | None) -> Callable[[dict | None], bool]:
    """selector_matches with the selector parsed once, for the many pods of a namespace."""
    if not sel or not (sel.get("matchLabels") or sel.get("matchExpressions")):
        return lambda labels: False
    try:
        parsed = label_selector_from_struct(sel)
    except (ValueError, errors.StatusError):
        return lambda labels: False
    return lambda labels: parsed.matches(labels or {})


# ------------------------------------------------------------------ pod state

def is_terminating(obj: dict) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def pod_active(pod: dict) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not is_terminating(pod)


def get_condition(obj: dict, ctype: str) -> dict | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def pod_ready(pod: dict) -> bool:
    c = get_condition(pod, "Ready")
    return bool(c and c.get("status") == "True")


def ready_since(pod: dict) -> _dt.datetime | None:
    c = get_condition(pod, "Ready")
    if not c or c.get("status") != "True":
        return None
    return parse_time(c.get("lastTransitionTime")) or None


def pod_available(pod: dict, min_ready_seconds: int, now: _dt.datetime | None = None) -> bool:
    if not pod_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = ready_since(pod)
    if since is None:
        return False
    now = now or now_dt()
    return (now - since).total_seconds() >= min_ready_seconds


def set_condition(status: dict, ctype: str, cstatus: str, reason: str, message: str,
                  now: str, keep_transition_on_reason: bool = False) -> None:
    """Upsert a condition; lastTransitionTime changes only when the status changes."""
    conds = status.setdefault("conditions", [])
    for c in conds:
        if c.get("type") == ctype:
            if c.get("status") != cstatus:
                c["lastTransitionTime"] = now
            if c.get("reason") != reason or c.get("message") != message or \
                    c.get("status") != cstatus:
                c["lastUpdateTime"] = now
            c.update(status=cstatus, reason=reason, message=message)
            return
    conds.append({"type": ctype, "status": cstatus, "lastUpdateTime": now,
                  "lastTransitionTime": now, "reason": reason, "message": message})


# ------------------------------------------------------------------ hashing

def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def safe_encode(s: str) -> str:
    return "".join(_SAFE[ord(c) % len(_SAFE)] for c in s)


def template_hash(template: dict | None, collision_count: int | None = None) -> str:
    """Stable short hash of a pod template (canonical JSON, FNV-32a, vowel-free encoding)."""
    data = json.dumps(template or {}, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    return safe_encode(str(fnv32a(data)))


def resolve_int_or_percent(value: Any, total: int, round_up: bool, default: Any = "25%") -> int:
    if value is None:
        value = default
    if isinstance(value, int):
        return value
    s = str(value).strip()
    if s.endswith("%"):
        pct = parse_int(s[:-1])
        raw = pct * total
        return -(-raw // 100) if round_up else raw // 100
    return parse_int(s)


# ------------------------------------------------------------------ expectations

class Expectations:
    """Per-controller-key counts of creates/deletes in flight, so a lagging informer does
    not cause duplicate work. Expired after a timeout like upstream (5 minutes)."""

    TTL = 300.0

    def __init__(self) -> None:
        self._exp: dict[str, list] = {}  # key -> [adds, dels, timestamp]

    def satisfied(self, key: str) -> bool:
        e = self._exp.get(key)
        if e is None:
            return True
        if e[0] <= 0 and e[1] <= 0:
            return True
        return time.monotonic() - e[2] > self.TTL

    def expect(self, key: str, adds: int = 0, dels: int = 0) -> None:
        self._exp[key] = [adds, dels, time.monotonic()]

    def raise_(self, key: str, adds: int = 0, dels: int = 0) -> None:
        e = self._exp.setdefault(key, [0, 0, time.monotonic()])
        e[0] += adds
        e[1] += dels

    def observed_add(self, key: str) -> None:
        e = self._exp.get(key)
        if e:
            e[0] -= 1

    def observed_del(self, key: str) -> None:
        e = self._exp.get(key)
        if e:
            e[1] -= 1

    def forget(self, key: str) -> None:
        self._exp.pop(key, None)


def owner_handler(ctrl: Any) -> Callable[[str, dict | None, dict | None], None]:
    """The informer handler for the kind a controller with `expectations` manages: enqueue the
    object, and forget its expectations once it is deleted."""
    def handle(etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old
        if obj is None:
            return
        if etype == "DELETED":
            ctrl.expectations.forget(object_key(obj))
        ctrl.enqueue(object_key(obj))
    return handle


def observe_pod_event(expectations: Expectations, key: str, etype: str, old: dict | None,
                      new: dict | None, delete_counted_once: bool = False) -> None:
    """Count a pod event against `key`'s expectations: ADDED is an observed create, a pod
    turning terminating an observed delete, and so is DELETED, unless `delete_counted_once`
    and the pod was already terminating (counted then)."""
    if etype == "ADDED":
        expectations.observed_add(key)
    elif etype == "DELETED":
        if not delete_counted_once or old is None or not is_terminating(old):
            expectations.observed_del(key)
    elif old is not None and new is not None and is_terminating(new) and \
            not is_terminating(old):
        expectations.observed_del(key)


def enqueue_when_available(ctrl: Any, key: str, min_ready_seconds: int, old: dict | None,
                           new: dict | None) -> None:
    """A pod that just turned Ready becomes available `min_ready_seconds` later: look again
    at its owner then."""
    if min_ready_seconds > 0 and new is not None and pod_ready(new) and \
            (old is None or not pod_ready(old)):
        ctrl.enqueue(key, after=min_ready_seconds + 0.5)


async def write_status(ctrl: Any, res: Any, obj: dict, st: dict, min_ready_seconds: int,
                       ready: str, available: str, omit_zero: tuple[str, ...] = (),
                       defaults: dict | None = None, same_object: bool = False) -> None:
    """Merge the counts `st` into `obj`'s status subresource unless its cached status has them
    already. With minReadySeconds, `obj` is looked at again in a second while st[ready] pods
    are more than st[available]. `omit_zero` fields are dropped when zero, `defaults` filled
    in when missing; `same_object` writes nothing to another incarnation (uid) of `obj` nor
    when the live status has the counts already."""
    if min_ready_seconds > 0 and st[ready] > st[available]:
        ctrl.enqueue(object_key(obj), after=1.0)
    cur = obj.get("status") or {}
    if all(cur.get(k, 0) == v for k, v in st.items()):
        return

    def mutate(live: dict) -> dict | None:
        if same_object and live["metadata"].get("uid") != obj["metadata"]["uid"]:
            return None
        status = live.get("status") or {}
        if same_object and all(status.get(k, 0) == v for k, v in st.items()):
            return None
        status.update(st)
        for k in omit_zero:
            if not status.get(k):
                status.pop(k, None)
        for k, v in (defaults or {}).items():
            status.setdefault(k, v)
        live["status"] = status
        return live

    await ctrl.registry.update_with(res, obj["metadata"]["namespace"], obj["metadata"]["name"],
                                    mutate, subresource="status")


# ------------------------------------------------------------------ pods

def owner_index(obj: dict) -> list[str]:
    """`namespace/uid` of the object's controller: an owner reference names an object of the
    same namespace (the garbage collector's rule), so a pod in another namespace that names a
    controller's uid is never that controller's."""
    ref = controller_ref(obj)
    if not ref or not ref.get("uid"):
        return []
    return [f"{(obj.get('metadata') or {}).get('namespace') or ''}/{ref['uid']}"]


def owned_by(inf: Any, owner: dict) -> list[dict]:
    """The objects in informer `inf` (indexed with OWNER_INDEX) that `owner` controls."""
    md = owner["metadata"]
    return inf.by_index(OWNER_INDEX, f"{md.get('namespace') or ''}/{md['uid']}")


def orphan_index(obj: dict) -> list[str]:
    """The namespace of a pod no controller owns (one a controller may adopt), else none."""
    if controller_ref(obj) is not None:
        return []
    return [(obj.get("metadata") or {}).get("namespace") or ""]


def watch_pods(ctx: Any) -> tuple[Any, Any]:
    """The pod informer, indexed by controller uid (OWNER_INDEX) and its orphans by namespace
    (ORPHAN_INDEX), and the pods Resource."""
    inf = ctx.informers.informer("", "pods")
    inf.add_index(OWNER_INDEX, owner_index)
    inf.add_index(ORPHAN_INDEX, orphan_index)
    return inf, ctx.resource("", "pods")


def claim_candidates(pod_inf: Any, owner: dict) -> list[dict]:
    """The pods `claim_pods` may keep or adopt for `owner`: those it controls, and the live
    orphans of its namespace. Read from the indexes, not the namespace's every pod: with
    30,000 pods in one namespace, a walk of them all at each reconcile (one per pod event)
    was most of the server's time."""
    md = owner["metadata"]
    orphans = [p for p in pod_inf.by_index(ORPHAN_INDEX, md.get("namespace") or "")
               if not is_terminating(p)]
    return owned_by(pod_inf, owner) + orphans


def owner_key_of(pod: dict | None, kind: str) -> str | None:
    """`namespace/name` of the `kind` object the pod's controller reference names, if any."""
    ref = controller_ref(pod) if pod is not None else None
    if not ref or ref.get("kind") != kind:
        return None
    return f"{pod['metadata'].get('namespace')}/{ref.get('name')}"


async def delete_exact(registry: Any, res: Any, obj: dict) -> bool:
    """Delete this incarnation of `obj` (uid precondition). False when it is gone or replaced
    already (404/409); any other error is raised."""
    md = obj["metadata"]
    try:
        await registry.delete(res, md["namespace"], md["name"],
                              {"preconditions": {"uid": md.get("uid")}})
    except errors.StatusError as e:
        if e.code not in (404, 409):
            raise
        return False
    return True


def pod_from_template(owner: dict, template: dict, generate_name: str | None = None,
                      name: str | None = None) -> dict:
    tmpl = deepcopy(template or {})
    tmd = tmpl.get("metadata") or {}
    md: dict = {"namespace": owner["metadata"].get("namespace"),
                "labels": dict(tmd.get("labels") or {}),
                "ownerReferences": [make_controller_ref(owner)]}
    if tmd.get("annotations"):
        md["annotations"] = dict(tmd["annotations"])
    if tmd.get("finalizers"):
        md["finalizers"] = list(tmd["finalizers"])
    if name:
        md["name"] = name
    else:
        md["generateName"] = generate_name or (owner["metadata"]["name"] + "-")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": tmpl.get("spec") or {}}


async def claim_pods(registry: Any, pod_res: Any, owner: dict, pods: list[dict],
                     selector: dict | None) -> list[dict]:
    """Adopt matching orphans and release owned pods that no longer match (like
    PodControllerRefManager). Returns the pods now owned by `owner`."""
    uid = owner["metadata"]["uid"]
    owned: list[dict] = []
    terminating_owner = is_terminating(owner)
    match = selector_matcher(selector)
    for pod in pods:
        ref = controller_ref(pod)
        if ref is not None and ref.get("uid") != uid:
            continue  # another controller's
        matches = match((pod.get("metadata") or {}).get("labels"))
        if ref is not None:
            if matches:
                owned.append(pod)
                continue
            if terminating_owner:
                continue
            await _release(registry, pod_res, pod, uid)
            continue
        if not matches or terminating_owner or is_terminating(pod):
            continue
        adopted = await _adopt(registry, pod_res, pod, owner, selector)
        if adopted is not None:
            owned.append(adopted)
    return owned


async def _adopt(registry: Any, res: Any, pod: dict, owner: dict, selector: dict | None
                 ) -> dict | None:
    md = pod["metadata"]

    def mutate(cur: dict) -> dict | None:
        if controller_ref(cur) is not None or is_terminating(cur):
            return None
        if not selector_matches(selector, cur["metadata"].get("labels")):
            return None
        refs = [r for r in cur["metadata"].get("ownerReferences") or []
                if r.get("uid") != owner["metadata"]["uid"]]
        refs.append(make_controller_ref(owner))
        cur["metadata"]["ownerReferences"] = refs
        return cur

    try:
        return await registry.update_with(res, md.get("namespace"), md["name"], mutate)
    except errors.StatusError:
        return None


async def _release(registry: Any, res: Any, pod: dict, uid: str) -> None:
    md = pod["metadata"]

    def mutate(cur: dict) -> dict | None:
        refs = cur["metadata"].get("ownerReferences") or []
        kept = [r for r in refs if r.get("uid") != uid]
        if len(kept) == len(refs):
            return None
        cur["metadata"]["ownerReferences"] = kept
        return cur

    try:
        await registry.update_with(res, md.get("namespace"), md["name"], mutate)
    except errors.StatusError:
        pass


# ------------------------------------------------------------------ controller revisions

REVISION_HASH_LABEL = "controller-revision-hash"


def revision_data(template: dict | None) -> dict:
    """What upstream stores in ControllerRevision.data: a strategic-merge patch that puts the
    template back (`kubectl rollout undo` applies it as is)."""
    t = deepcopy(template or {})
    t["$patch"] = "replace"
    return {"spec": {"template": t}}


class RevisionHistory:
    """The ControllerRevisions a DaemonSet or StatefulSet owns: records the current template
    as a revision (re-numbered as the newest on a rollback) and prunes old unused ones."""

    def __init__(self, ctx: Any) -> None:
        self.registry = ctx.registry
        self.inf = ctx.informers.informer("apps", "controllerrevisions")
        self.inf.add_index(OWNER_INDEX, owner_index)
        self.res = ctx.resource("apps", "controllerrevisions")

    def owned(self, owner: dict) -> list[dict]:
        return [r for r in owned_by(self.inf, owner) if not is_terminating(r)]

    async def sync(self, owner: dict, rev_name: str, label_value: str,
                   in_use: set[str]) -> int:
        """Ensure revision `rev_name` exists and is the newest; returns its number."""
        ns = owner["metadata"]["namespace"]
        template = (owner.get("spec") or {}).get("template") or {}
        revs = self.owned(owner)
        others = [r for r in revs if r["metadata"]["name"] != rev_name]
        top = max((parse_int(r.get("revision")) for r in others), default=0)
        cur = next((r for r in revs if r["metadata"]["name"] == rev_name), None)
        if cur is None:
            labels = dict(((template.get("metadata") or {}).get("labels")) or {})
            labels[REVISION_HASH_LABEL] = label_value
            cr = {"apiVersion": "apps/v1", "kind": "ControllerRevision",
                  "metadata": {"name": rev_name, "namespace": ns, "labels": labels,
                               "ownerReferences": [make_controller_ref(owner)]},
                  "data": revision_data(template), "revision": top + 1}
            try:
                cur = await self.registry.create(self.res, ns, cr)
            except errors.StatusError as e:
                if e.code != 409:
                    raise
                cur = await self.registry.try_get(self.res, ns, rev_name)
                if cur is None or controller_ref(cur) is None or \
                        controller_ref(cur).get("uid") != owner["metadata"]["uid"]:
                    return top + 1
        if parse_int(cur.get("revision")) <= top:
            def bump(obj: dict) -> dict | None:
                if parse_int(obj.get("revision")) > top:
                    return None
                obj["revision"] = top + 1
                return obj
            cur = await self.registry.update_with(self.res, ns, rev_name, bump) or cur
        await self._prune(owner, others, in_use)
        return parse_int(cur.get("revision"))

    async def _prune(self, owner: dict, others: list[dict], in_use: set[str]) -> None:
        limit = (owner.get("spec") or {}).get("revisionHistoryLimit")
        limit = 10 if limit is None else max(0, parse_int(limit, 10))
        unused = sorted((r for r in others if r["metadata"]["name"] not in in_use),
                        key=lambda r: parse_int(r.get("revision")))
        for r in unused[:max(0, len(unused) - limit)]:
            await delete_exact(self.registry, self.res, r)
