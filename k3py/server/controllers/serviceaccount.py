"""ServiceAccountController: a `default` ServiceAccount in every active namespace, created
again if deleted. Token issuing lives in k3py.server.serviceaccounts."""

from __future__ import annotations

from k3py.api import errors
from k3py.server.controllers.base import Controller, ControllerContext

__all__ = ["ServiceAccountController", "DEFAULT_ACCOUNTS"]

DEFAULT_ACCOUNTS = ("default",)


class ServiceAccountController(Controller):
    name = "serviceaccount"
    workers = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.sa_res = ctx.resource("", "serviceaccounts")

    def setup(self) -> None:
        self.namespaces = self.ctx.informers.informer("", "namespaces")
        self.accounts = self.ctx.informers.informer("", "serviceaccounts")
        self.namespaces.add_handler(self._on_namespace)
        self.accounts.add_handler(self._on_account)

    def _on_namespace(self, etype: str, old: dict | None, new: dict | None) -> None:
        if etype != "DELETED" and new is not None:
            self.enqueue(new["metadata"]["name"])

    def _on_account(self, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old or {}
        md = obj.get("metadata") or {}
        if etype == "DELETED" and md.get("name") in DEFAULT_ACCOUNTS:
            self.enqueue(md.get("namespace"))

    async def reconcile(self, key: str) -> None:
        await self.namespaces.synced.wait()
        await self.accounts.synced.wait()
        ns = self.namespaces.get(None, key)
        if ns is None or (ns.get("metadata") or {}).get("deletionTimestamp") or \
                (ns.get("status") or {}).get("phase") == "Terminating":
            return
        for name in DEFAULT_ACCOUNTS:
            if self.accounts.get(key, name) is not None:
                continue
            try:
                await self.registry.create(self.sa_res, key, {
                    "apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": name, "namespace": key}})
            except errors.StatusError as e:
                if e.code not in (403, 404, 409):
                    raise
