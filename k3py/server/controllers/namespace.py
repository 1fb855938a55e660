"""NamespaceController: empties a terminating namespace, then clears its `kubernetes` finalizer.

The registry keeps a deleted namespace while spec.finalizers is non-empty; once the finalize
write leaves it empty the registry removes the namespace in the same write."""

from __future__ import annotations

import logging

from k3py.api import errors
from k3py.api.resources import Resource
from k3py.server.controllers.base import Controller

__all__ = ["NamespaceController", "namespaced_resources"]

log = logging.getLogger("k3py.controllers.namespace")

FINALIZER = "kubernetes"


def namespaced_resources(resources) -> list[Resource]:
    """One Resource per storage location among the namespaced, deletable resources."""
    seen: set[str] = set()
    out = []
    for res in resources:
        if not res.namespaced or "delete" not in res.verbs or "list" not in res.verbs:
            continue
        prefix = resources.storage_prefix(res, None)
        if prefix in seen:
            continue
        seen.add(prefix)
        out.append(res)
    return out


class NamespaceController(Controller):
    name = "namespace-controller"

    def setup(self) -> None:
        self.namespaces = self.ctx.informers.informer("", "namespaces")
        self.namespaces.add_handler(self._on_namespace)

    def _on_namespace(self, etype: str, old: dict | None, new: dict | None) -> None:
        if new is not None and (new.get("metadata") or {}).get("deletionTimestamp"):
            self.enqueue(new["metadata"]["name"])

    async def reconcile(self, key: str) -> None:
        ns_res = self.ctx.resource("", "namespaces")
        ns = await self.registry.try_get(ns_res, None, key)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        if FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or []):
            return
        remaining = await self.delete_contents(key)
        if remaining:
            log.debug("namespace %s: %d objects remain", key, remaining)
            self.enqueue(key, after=1.0)
            return

        def finalize(obj: dict) -> dict | None:
            fins = (obj.get("spec") or {}).get("finalizers") or []
            if FINALIZER not in fins:
                return None
            obj.setdefault("spec", {})["finalizers"] = [f for f in fins if f != FINALIZER]
            return obj
        await self.registry.update_with(ns_res, None, key, finalize, subresource="finalize")

    async def delete_contents(self, namespace: str) -> int:
        """Delete every object in the namespace; returns how many still exist afterwards."""
        remaining = 0
        for res in namespaced_resources(self.registry.resources):
            try:
                listing = await self.registry.list(res, namespace)
            except errors.StatusError as e:
                log.debug("namespace %s: list %s: %s", namespace, res.plural, e.message)
                continue
            for obj in listing.get("items") or []:
                md = obj.get("metadata") or {}
                remaining += 1
                if md.get("deletionTimestamp"):
                    continue
                try:
                    await self.registry.delete(res, namespace, md["name"],
                                               {"propagationPolicy": "Background"})
                except errors.StatusError as e:
                    if e.code == 404:
                        remaining -= 1
                        continue
                    log.debug("namespace %s: delete %s/%s: %s", namespace, res.plural,
                              md.get("name"), e.message)
        if remaining:
            # count again: most deletes are immediate
            remaining = 0
            for res in namespaced_resources(self.registry.resources):
                try:
                    listing = await self.registry.list(res, namespace)
                except errors.StatusError:
                    continue
                remaining += len(listing.get("items") or [])
        return remaining
