"""NamespaceController: makes sure the system namespaces exist and finishes namespace deletion
(delete every namespaced object of every resource, then clear the `kubernetes` finalizer)."""

from __future__ import annotations

import logging

from k3py.api import errors
from k3py.api.objects import now_rfc3339
from k3py.api.resources import Resource
from k3py.server.controllers.base import Controller, ControllerContext

__all__ = ["NamespaceController", "SYSTEM_NAMESPACES", "FINALIZER"]

log = logging.getLogger("k3py.controllers.namespace")

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
FINALIZER = "kubernetes"
_REQUEUE = 1.0


class NamespaceController(Controller):
    name = "namespace"
    workers = 4

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.ns_res = ctx.resource("", "namespaces")

    def setup(self) -> None:
        inf = self.ctx.informers.informer("", "namespaces")
        inf.add_handler(self._on_namespace)

    def _on_namespace(self, etype: str, old: dict | None, new: dict | None) -> None:
        if new is not None and etype != "DELETED" and \
                (new.get("metadata") or {}).get("deletionTimestamp"):
            self.enqueue(new["metadata"]["name"])

    async def start(self) -> None:
        await self.ensure_system_namespaces()
        await super().start()

    async def ensure_system_namespaces(self) -> None:
        for name in SYSTEM_NAMESPACES:
            if await self.registry.try_get(self.ns_res, None, name) is not None:
                continue
            try:
                await self.registry.create(self.ns_res, None, {
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            except errors.StatusError as e:
                if e.code != 409:
                    raise

    def content_resources(self) -> list[Resource]:
        """One resource per storage location: namespaced, listable and deletable."""
        seen: set[str] = set()
        out = []
        for res in self.registry.resources:
            if not res.namespaced or "list" not in res.verbs or "delete" not in res.verbs:
                continue
            prefix = self.registry.resources.storage_prefix(res)
            if prefix in seen:
                continue
            seen.add(prefix)
            out.append(res)
        return out

    async def reconcile(self, key: str) -> None:
        ns = await self.registry.try_get(self.ns_res, None, key)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        if FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or []):
            return
        remaining: dict[str, int] = {}
        failures: list[str] = []
        for res in self.content_resources():
            try:
                items = (await self.registry.list(res, key))["items"]
            except errors.StatusError as e:
                failures.append(f"{res.group_resource}: {e.message}")
                continue
            for obj in items:
                md = obj["metadata"]
                if not md.get("deletionTimestamp"):
                    try:
                        await self.registry.delete(res, key, md["name"],
                                                   {"propagationPolicy": "Background"})
                    except errors.StatusError as e:
                        if e.code != 404:
                            failures.append(f"{res.group_resource} {md['name']}: {e.message}")
                        continue
                    if await self.registry.try_get(res, key, md["name"]) is None:
                        continue
                remaining[res.group_resource] = remaining.get(res.group_resource, 0) + 1
        if remaining or failures:
            await self._set_conditions(key, remaining, failures)
            self.enqueue(key, after=_REQUEUE)
            return

        def finalize(cur: dict) -> dict | None:
            fins = (cur.get("spec") or {}).get("finalizers") or []
            if FINALIZER not in fins:
                return None
            cur["spec"]["finalizers"] = [f for f in fins if f != FINALIZER]
            return cur
        await self.registry.update_with(self.ns_res, None, key, finalize,
                                        subresource="finalize")

    async def _set_conditions(self, name: str, remaining: dict[str, int],
                              failures: list[str]) -> None:
        """Upstream's NamespaceContentRemaining / NamespaceDeletionContentFailure."""
        now = now_rfc3339()
        wanted = {
            "NamespaceDeletionContentFailure": (
                ("True", "ContentDeletionFailed", "Failed to delete all resource types, "
                 f"{len(failures)} remaining: " + ", ".join(failures))
                if failures else ("False", "ContentDeleted",
                                  "All content successfully deleted, may be waiting on "
                                  "finalization")),
            "NamespaceContentRemaining": (
                ("True", "SomeResourcesRemain", "Some resources are remaining: " + ", ".join(
                    f"{gr} has {n} resource instances" for gr, n in sorted(remaining.items())))
                if remaining else ("False", "ContentRemoved", "All content successfully removed")),
        }

        def mutate(cur: dict) -> dict | None:
            status = cur.setdefault("status", {})
            conds = {c.get("type"): c for c in status.get("conditions") or []}
            changed = False
            for ctype, (st, reason, msg) in wanted.items():
                c = conds.get(ctype)
                if c and (c.get("status"), c.get("reason"), c.get("message")) == (st, reason, msg):
                    continue
                conds[ctype] = {"type": ctype, "status": st, "reason": reason, "message": msg,
                                "lastTransitionTime": now}
                changed = True
            if not changed:
                return None
            status["conditions"] = list(conds.values())
            return cur
        try:
            await self.registry.update_with(self.ns_res, None, name, mutate,
                                            subresource="status")
        except errors.StatusError as e:
            log.debug("namespace %s conditions: %s", name, e.message)
