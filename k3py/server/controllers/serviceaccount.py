"""ServiceAccountController: keeps a `default` ServiceAccount in every active namespace.

Re-creates it when deleted; terminating namespaces are skipped."""

from __future__ import annotations

from k3py.api import errors
from k3py.server.controllers.base import Controller

__all__ = ["ServiceAccountController", "DEFAULT_NAMES"]

DEFAULT_NAMES = ("default",)


class ServiceAccountController(Controller):
    name = "serviceaccount-controller"

    def setup(self) -> None:
        self.namespaces = self.ctx.informers.informer("", "namespaces")
        self.accounts = self.ctx.informers.informer("", "serviceaccounts")
        self.namespaces.add_handler(self._on_namespace)
        self.accounts.add_handler(self._on_account)

    def _on_namespace(self, etype: str, old: dict | None, new: dict | None) -> None:
        if new is not None and etype != "DELETED":
            self.enqueue(new["metadata"]["name"])

    def _on_account(self, etype: str, old: dict | None, new: dict | None) -> None:
        if etype == "DELETED" and old is not None:
            md = old.get("metadata") or {}
            if md.get("name") in DEFAULT_NAMES:
                self.enqueue(md.get("namespace"))

    async def reconcile(self, key: str) -> None:
        ns_res = self.ctx.resource("", "namespaces")
        ns = self.namespaces.get(None, key) or await self.registry.try_get(ns_res, None, key)
        if ns is None or (ns.get("metadata") or {}).get("deletionTimestamp") or \
                (ns.get("status") or {}).get("phase") == "Terminating":
            return
        sa_res = self.ctx.resource("", "serviceaccounts")
        for name in DEFAULT_NAMES:
            if self.accounts.get(key, name) is not None:
                continue
            if await self.registry.try_get(sa_res, key, name) is not None:
                continue
            try:
                await self.registry.create(sa_res, key, {
                    "apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": key}})
            except errors.StatusError as e:
                # 409: someone else made it; 403/404: the namespace is going away
                if e.code not in (409, 403, 404):
                    raise
