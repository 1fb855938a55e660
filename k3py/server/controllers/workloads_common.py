"""Shared helpers for the workload controllers: pod readiness, selectors, expectations, hashing.

Pure functions plus a small Expectations tracker and the adopt/create/delete pod plumbing."""

from __future__ import annotations

import datetime as _dt
import json
import time
from typing import Any

from k3py.api import errors
from k3py.api.objects import controller_ref, deepcopy, make_controller_ref, parse_time

__all__ = ["selector_matches", "pod_ready", "pod_available", "pod_active", "ready_since",
           "Expectations", "template_hash", "safe_encode", "fnv32a", "pod_from_template",
           "resolve_int_or_percent", "set_condition", "get_condition", "owner_index",
           "OWNER_INDEX", "parse_int", "is_terminating", "claim_pods", "now_dt"]

OWNER_INDEX = "controller-uid"
_SAFE = "bcdfghjklmnpqrstvwxz2456789"


def now_dt() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def parse_int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


# ------------------------------------------------------------------ selectors

def _match_expr(labels: dict, expr: dict) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False


def selector_matches(sel: dict | None, labels: dict | None) -> bool:
    """A metav1.LabelSelector struct against labels; an empty/None selector matches nothing
    (controllers treat an empty selector as selecting nothing)."""
    labels = labels or {}
    if not sel or not (sel.get("matchLabels") or sel.get("matchExpressions")):
        return False
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    return all(_match_expr(labels, e) for e in sel.get("matchExpressions") or [])


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


# ------------------------------------------------------------------ pods

def owner_index(obj: dict) -> list[str]:
    ref = controller_ref(obj)
    return [ref["uid"]] if ref and ref.get("uid") else []


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
    for pod in pods:
        ref = controller_ref(pod)
        labels = (pod.get("metadata") or {}).get("labels") or {}
        matches = selector_matches(selector, labels)
        if ref is not None:
            if ref.get("uid") != uid:
                continue
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
