"""GarbageCollector: deletes dependents whose owners are all gone, and carries out foreground
(delete dependents first) and orphan (strip ownerReferences) deletion of owners.

Owners are looked up by uid in the informer caches and confirmed with a live GET before a
dependent is deleted, so a cache that lags behind a fresh owner never costs a dependent."""

from __future__ import annotations

import logging

from k3py.api import errors
from k3py.api.resources import Resource
from k3py.server.controllers.base import Controller, object_key, split_key

__all__ = ["GarbageCollector", "WATCHED", "FOREGROUND", "ORPHAN"]

log = logging.getLogger("k3py.controllers.gc")

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
WATCHED: tuple[tuple[str, str], ...] = (
    ("", "pods"), ("apps", "replicasets"), ("apps", "deployments"), ("apps", "daemonsets"),
    ("apps", "statefulsets"), ("batch", "jobs"), ("batch", "cronjobs"),
    ("apps", "controllerrevisions"), ("discovery.k8s.io", "endpointslices"), ("", "events"),
    ("", "services"),
)
RECHECK_SECONDS = 30.0


def _refs(obj: dict | None) -> list[dict]:
    return list(((obj or {}).get("metadata") or {}).get("ownerReferences") or [])


def _owner_uids(obj: dict) -> list[str]:
    return [r["uid"] for r in _refs(obj) if r.get("uid")]


def _finalizers(obj: dict | None) -> list[str]:
    return list(((obj or {}).get("metadata") or {}).get("finalizers") or [])


def _terminating_owner(obj: dict | None) -> bool:
    md = (obj or {}).get("metadata") or {}
    return bool(md.get("deletionTimestamp")) and bool(
        {FOREGROUND, ORPHAN} & set(md.get("finalizers") or []))


class GarbageCollector(Controller):
    name = "garbage-collector"
    workers = 4

    def setup(self) -> None:
        self.informers: dict[tuple[str, str], object] = {}
        for group, plural in WATCHED:
            try:
                inf = self.ctx.informers.informer(group, plural)
            except KeyError:
                continue
            inf.add_index("gc-owner", _owner_uids)
            self.informers[(group, plural)] = inf
            inf.add_handler(self._handler(group, plural))

    # ------------------------------------------------------------ event wiring

    def _handler(self, group: str, plural: str):
        def on_event(etype: str, old: dict | None, new: dict | None) -> None:
            obj = new if new is not None else old
            if obj is None:
                return
            key = object_key(obj)
            if etype == "DELETED":
                uid = (obj.get("metadata") or {}).get("uid")
                if uid:
                    self._enqueue_dependents(uid)
                self._enqueue_terminating_owners(obj)
                return
            if _refs(new) and (etype == "ADDED" or _refs(new) != _refs(old)):
                self.enqueue(f"d|{group}|{plural}|{key}")
            if _terminating_owner(new):
                self.enqueue(f"o|{group}|{plural}|{key}")
        return on_event

    def _enqueue_dependents(self, uid: str) -> None:
        for (group, plural), inf in self.informers.items():
            for dep in inf.by_index("gc-owner", uid):
                self.enqueue(f"d|{group}|{plural}|{object_key(dep)}")

    def _enqueue_terminating_owners(self, dependent: dict) -> None:
        ns = (dependent.get("metadata") or {}).get("namespace")
        for ref in _refs(dependent):
            res = self._resource_of(ref)
            if res is None:
                continue
            inf = self.informers.get((res.group, res.plural))
            if inf is None:
                continue
            owner = inf.get(ns if res.namespaced else None, ref.get("name") or "")
            if owner is not None and _terminating_owner(owner):
                self.enqueue(f"o|{res.group}|{res.plural}|{object_key(owner)}", after=0.1)

    def _resource_of(self, ref: dict) -> Resource | None:
        api_version, kind = ref.get("apiVersion") or "", ref.get("kind") or ""
        res = self.registry.resources.by_api_version_kind(api_version, kind)
        if res is None:
            group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
            res = self.registry.resources.by_kind(group, kind)
        return res

    def dependents_of(self, uid: str) -> list[tuple[Resource, dict]]:
        out = []
        for (group, plural), inf in self.informers.items():
            res = self.registry.resources.find(group, plural)
            if res is None:
                continue
            out.extend((res, dep) for dep in inf.by_index("gc-owner", uid))
        return out

    # ------------------------------------------------------------ reconcile

    async def reconcile(self, key: str) -> None:
        kind, group, plural, obj_key = key.split("|", 3)
        res = self.registry.resources.find(group, plural)
        if res is None:
            return
        ns, name = split_key(obj_key)
        if kind == "d":
            await self._check_dependent(res, ns, name, key)
        else:
            await self._process_owner(res, ns, name, key)

    async def _owner_state(self, ref: dict, ns: str | None) -> str:
        """"present", "absent" or "unknown" (kind not served: leave the dependent alone)."""
        res = self._resource_of(ref)
        if res is None:
            return "unknown"
        owner_ns = ns if res.namespaced else None
        inf = self.informers.get((res.group, res.plural))
        if inf is not None:
            cached = inf.get(owner_ns, ref.get("name") or "")
            if cached is not None and cached["metadata"].get("uid") == ref.get("uid"):
                return "present"
        live = await self.registry.try_get(res, owner_ns, ref.get("name") or "")
        if live is not None and live["metadata"].get("uid") == ref.get("uid"):
            return "present"
        return "absent"

    async def _check_dependent(self, res: Resource, ns: str | None, name: str,
                               key: str) -> None:
        obj = await self.registry.try_get(res, ns, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        refs = _refs(obj)
        if not refs:
            return
        states = [await self._owner_state(ref, ns) for ref in refs]
        if "absent" not in states:
            if any((self._resource_of(r) is None or (self._resource_of(r).group,
                    self._resource_of(r).plural) not in self.informers) for r in refs):
                self.enqueue(key, after=RECHECK_SECONDS)
            return
        if all(s == "absent" for s in states):
            log.info("gc: deleting %s %s/%s: owners are gone", res.kind, ns, name)
            try:
                await self.registry.delete(res, ns, name, {
                    "propagationPolicy": "Background",
                    "preconditions": {"uid": obj["metadata"].get("uid")}})
            except errors.StatusError as e:
                if e.code not in (404, 409):
                    raise
            return
        # some owners gone, some not: drop the dangling references
        gone = {r.get("uid") for r, s in zip(refs, states, strict=True) if s == "absent"}

        def strip(cur: dict) -> dict | None:
            if cur["metadata"].get("uid") != obj["metadata"].get("uid"):
                return None
            cur["metadata"]["ownerReferences"] = [
                r for r in _refs(cur) if r.get("uid") not in gone]
            return cur
        await self.registry.update_with(res, ns, name, strip)

    async def _process_owner(self, res: Resource, ns: str | None, name: str,
                             key: str) -> None:
        owner = await self.registry.try_get(res, ns, name)
        if owner is None or not _terminating_owner(owner):
            return
        uid = owner["metadata"].get("uid")
        fins = _finalizers(owner)
        if ORPHAN in fins:
            for dres, dep in self.dependents_of(uid):
                dmd = dep["metadata"]

                def strip(cur: dict) -> dict | None:
                    refs = _refs(cur)
                    kept = [r for r in refs if r.get("uid") != uid]
                    if len(kept) == len(refs):
                        return None
                    if kept:
                        cur["metadata"]["ownerReferences"] = kept
                    else:
                        cur["metadata"].pop("ownerReferences", None)
                    return cur
                await self.registry.update_with(dres, dmd.get("namespace"), dmd["name"], strip)
            await self._remove_finalizer(res, ns, name, uid, ORPHAN)
            return
        if FOREGROUND not in fins:
            return
        remaining = 0
        for dres, dep in self.dependents_of(uid):
            dmd = dep["metadata"]
            remaining += 1
            if dmd.get("deletionTimestamp"):
                continue
            has_own = bool(self.dependents_of(dmd.get("uid") or ""))
            try:
                await self.registry.delete(dres, dmd.get("namespace"), dmd["name"], {
                    "propagationPolicy": "Foreground" if has_own else "Background",
                    "preconditions": {"uid": dmd.get("uid")}})
            except errors.StatusError as e:
                if e.code not in (404, 409):
                    raise
        if remaining:
            self.enqueue(key, after=1.0)
            return
        await self._remove_finalizer(res, ns, name, uid, FOREGROUND)

    async def _remove_finalizer(self, res: Resource, ns: str | None, name: str, uid: str,
                                finalizer: str) -> None:
        def drop(cur: dict) -> dict | None:
            md = cur["metadata"]
            if md.get("uid") != uid or finalizer not in (md.get("finalizers") or []):
                return None
            md["finalizers"] = [f for f in md["finalizers"] if f != finalizer]
            if not md["finalizers"]:
                md.pop("finalizers")
            return cur
        await self.registry.update_with(res, ns, name, drop)
