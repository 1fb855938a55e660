"""GarbageCollector: an ownerReferences graph (by uid) over every deletable resource but
events; deletes dependents whose owners are all gone, and runs Foreground and Orphan deletion."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from k3py.api import errors
from k3py.api.resources import Resource
from k3py.server.controllers.base import Controller, ControllerContext, drop_finalizer

__all__ = ["GarbageCollector", "classify_owners", "deletion_policy", "watched_resources",
           "FOREGROUND", "ORPHAN"]

log = logging.getLogger("k3py.controllers.gc")

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
SKIP = {("", "events"), ("events.k8s.io", "events")}
_RESCAN = 5.0  # how often new resources (CRDs) are picked up


def watched_resources(registry) -> list[Resource]:
    """Every listable, watchable, deletable resource (one per storage location)."""
    seen: set[str] = set()
    out = []
    for res in registry.resources:
        if (res.group, res.plural) in SKIP:
            continue
        if not {"list", "watch", "delete"} <= set(res.verbs):
            continue
        prefix = registry.resources.storage_prefix(res)
        if prefix not in seen:
            seen.add(prefix)
            out.append(res)
    return out


def _finalizers(obj: dict) -> list[str]:
    return list((obj.get("metadata") or {}).get("finalizers") or [])


def _deleting(obj: dict) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def classify_owners(dependent: dict, owner_state) -> tuple[list[dict], list[dict], list[dict]]:
    """Split the dependent's ownerReferences into (solid, dangling, waiting) using
    `owner_state(ref) -> "solid" | "dangling" | "waiting" | "unknown"`; unknown counts solid."""
    solid, dangling, waiting = [], [], []
    for ref in (dependent.get("metadata") or {}).get("ownerReferences") or []:
        state = owner_state(ref)
        (dangling if state == "dangling" else waiting if state == "waiting" else solid).append(
            ref)
    return solid, dangling, waiting


def deletion_policy(dependent: dict, waiting: list[dict]) -> str:
    fins = _finalizers(dependent)
    if ORPHAN in fins:
        return "Orphan"
    if FOREGROUND in fins or waiting:
        return "Foreground"
    return "Background"


class GarbageCollector(Controller):
    name = "garbagecollector"
    workers = 4

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.objects: dict[str, tuple[Resource, dict]] = {}  # uid -> (resource, object)
        self.dependents: dict[str, set[str]] = {}  # owner uid -> dependent uids
        self._watched: set[str] = set()
        self._informers: list = []
        self._rescan: asyncio.Task | None = None

    # ------------------------------------------------------------ graph upkeep

    def setup(self) -> None:
        self._watch_new_resources()

    async def start(self) -> None:
        await super().start()
        self._rescan = asyncio.create_task(self._rescan_loop(), name="gc-rescan")

    async def stop(self) -> None:
        if self._rescan:
            self._rescan.cancel()
            with contextlib.suppress(BaseException):
                await self._rescan
        await super().stop()

    async def _rescan_loop(self) -> None:
        while True:
            await asyncio.sleep(_RESCAN)
            self._watch_new_resources()

    def _watch_new_resources(self) -> None:
        for res in watched_resources(self.registry):
            prefix = self.registry.resources.storage_prefix(res)
            if prefix in self._watched:
                continue
            self._watched.add(prefix)
            try:
                inf = self.ctx.informers.informer(res.group, res.plural)
            except KeyError:
                continue
            self._informers.append(inf)
            inf.add_handler(self._handler(res))

    def _handler(self, res: Resource):
        def on_event(etype: str, old: dict | None, new: dict | None) -> None:
            obj = new if etype != "DELETED" else (new or old)
            if obj is None:
                return
            uid = (obj.get("metadata") or {}).get("uid")
            if not uid:
                return
            before = self.objects.get(uid)
            old_owners = {r.get("uid") for r in
                          ((before[1] if before else old) or {}).get("metadata", {})
                          .get("ownerReferences") or []}
            if etype == "DELETED":
                self.objects.pop(uid, None)
                for o in old_owners:
                    self._unlink(o, uid)
                for dep in list(self.dependents.get(uid, ())):
                    self.enqueue("d/" + dep)
                for o in old_owners:  # a foreground owner may be waiting for this one
                    if o in self.objects:
                        self.enqueue("o/" + o)
                return
            self.objects[uid] = (res, obj)
            owners = {r.get("uid") for r in (obj.get("metadata") or {}).get("ownerReferences")
                      or []}
            for o in old_owners - owners:
                self._unlink(o, uid)
            for o in owners - old_owners:
                self.dependents.setdefault(o, set()).add(uid)
            if owners and (before is None or owners != old_owners):
                self.enqueue("d/" + uid)
            if _deleting(obj) and {FOREGROUND, ORPHAN} & set(_finalizers(obj)):
                self.enqueue("o/" + uid)
        return on_event

    def _unlink(self, owner: str, dep: str) -> None:
        deps = self.dependents.get(owner)
        if deps is not None:
            deps.discard(dep)
            if not deps:
                del self.dependents[owner]

    # ------------------------------------------------------------ decisions

    async def reconcile(self, key: str) -> None:
        for inf in list(self._informers):
            await inf.synced.wait()
        kind, uid = key.split("/", 1)
        if kind == "d":
            await self.attempt_to_delete(uid)
        else:
            await self.process_deleting_owner(uid)

    async def _owner_state(self, dep_res: Resource, dep: dict, ref: dict) -> str:
        cached = self.objects.get(ref.get("uid", ""))
        if cached is not None:
            owner = cached[1]
            if _deleting(owner) and FOREGROUND in _finalizers(owner):
                return "waiting"
            return "solid"
        # not in the graph: ask the store before calling it gone (upstream's virtual nodes)
        owner_res = self.registry.resources.by_api_version_kind(
            ref.get("apiVersion") or "", ref.get("kind") or "")
        if owner_res is None:
            group = (ref.get("apiVersion") or "").rpartition("/")[0]
            owner_res = self.registry.resources.by_kind(group, ref.get("kind") or "")
        if owner_res is None:
            return "unknown"
        ns = (dep.get("metadata") or {}).get("namespace")
        if owner_res.namespaced and not ns:
            return "dangling"
        live = await self.registry.try_get(owner_res, ns if owner_res.namespaced else None,
                                           ref.get("name") or "")
        if live is None or live["metadata"].get("uid") != ref.get("uid"):
            return "dangling"
        if _deleting(live) and FOREGROUND in _finalizers(live):
            return "waiting"
        return "solid"

    async def attempt_to_delete(self, uid: str) -> None:
        cached = self.objects.get(uid)
        if cached is None:
            return
        res, dep = cached
        md = dep.get("metadata") or {}
        if _deleting(dep) or not md.get("ownerReferences"):
            return
        states = {}
        for ref in md["ownerReferences"]:
            states[ref.get("uid")] = await self._owner_state(res, dep, ref)
        solid, dangling, waiting = classify_owners(dep, lambda r: states[r.get("uid")])
        if solid:
            gone = {r.get("uid") for r in dangling + waiting}
            if gone:
                await self._remove_owner_refs(res, dep, gone)
            return
        policy = deletion_policy(dep, waiting)
        log.debug("deleting %s %s/%s (owners gone), policy %s", res.plural,
                  md.get("namespace"), md.get("name"), policy)
        try:
            await self.registry.delete(res, md.get("namespace"), md["name"], {
                "propagationPolicy": policy, "preconditions": {"uid": uid}})
        except errors.StatusError as e:
            if e.code not in (404, 409):
                raise

    async def _remove_owner_refs(self, res: Resource, obj: dict, owner_uids: set[str]) -> None:
        md = obj["metadata"]
        uid = md.get("uid")

        def mutate(cur: dict) -> dict | None:
            cmd = cur.get("metadata") or {}
            if cmd.get("uid") != uid:
                return None
            refs = cmd.get("ownerReferences") or []
            keep = [r for r in refs if r.get("uid") not in owner_uids]
            if len(keep) == len(refs):
                return None
            if keep:
                cmd["ownerReferences"] = keep
            else:
                cmd.pop("ownerReferences", None)
            return cur
        await self.registry.update_with(res, md.get("namespace"), md["name"], mutate)

    async def process_deleting_owner(self, uid: str) -> None:
        cached = self.objects.get(uid)
        if cached is None:
            return
        res, owner = cached
        if not _deleting(owner):
            return
        fins = _finalizers(owner)
        deps = [self.objects[d] for d in list(self.dependents.get(uid, ())) if d in self.objects]
        if ORPHAN in fins:
            for dres, dep in deps:
                await self._remove_owner_refs(dres, dep, {uid})
            await self._drop_finalizer(res, owner, ORPHAN)
            return
        if FOREGROUND not in fins:
            return
        blocking = 0
        for _dres, dep in deps:
            ref = next((r for r in dep["metadata"].get("ownerReferences") or []
                        if r.get("uid") == uid), {})
            if ref.get("blockOwnerDeletion"):
                blocking += 1
            if not _deleting(dep):
                self.enqueue("d/" + dep["metadata"]["uid"])
        if blocking:
            self.enqueue("o/" + uid, after=1.0)  # DELETED events usually come first
            return
        await self._drop_finalizer(res, owner, FOREGROUND)

    async def _drop_finalizer(self, res: Resource, obj: dict, finalizer: str) -> None:
        await drop_finalizer(self.registry, res, obj, finalizer)
