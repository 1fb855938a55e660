"""TokensController: fills every kubernetes.io/service-account-token Secret with a legacy token,
ca.crt and namespace, and deletes the token Secrets of ServiceAccounts that are gone, as
upstream's serviceaccount-token controller does.

The token is signed by the server's TokenIssuer (ctx.extra["service_account_issuer"],
k3py.server.serviceaccounts), which also checks it on every request; ca.crt is the server CA
that kube-root-ca.crt publishes (k3py.server.controllers.rootca)."""

from __future__ import annotations

import base64
import logging

from k3py.api import errors
from k3py.server.controllers.base import Controller, ControllerContext, object_key, split_key
from k3py.server.controllers.rootca import server_ca
from k3py.server.serviceaccounts import TokenIssuer

__all__ = ["TokensController", "SECRET_TYPE", "NAME_ANNOTATION", "UID_ANNOTATION"]

log = logging.getLogger("k3py.controllers.tokens")

SECRET_TYPE = "kubernetes.io/service-account-token"
NAME_ANNOTATION = "kubernetes.io/service-account.name"
UID_ANNOTATION = "kubernetes.io/service-account.uid"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _account_name(secret: dict) -> str:
    """The ServiceAccount a token Secret names, "" if it is not one."""
    if secret.get("type") != SECRET_TYPE:
        return ""
    return str(((secret.get("metadata") or {}).get("annotations") or {}).get(NAME_ANNOTATION)
               or "")


class TokensController(Controller):
    name = "serviceaccount-token"
    workers = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.secret_res = ctx.resource("", "secrets")
        self.sa_res = ctx.resource("", "serviceaccounts")
        self.issuer: TokenIssuer | None = ctx.extra.get("service_account_issuer")
        self.ca_pem: str = server_ca(ctx) or ""
        if self.issuer is None:
            log.warning("no service-account issuer: token Secrets are not filled")

    def setup(self) -> None:
        self.secrets = self.ctx.informers.informer("", "secrets")
        self.accounts = self.ctx.informers.informer("", "serviceaccounts")
        self.secrets.add_handler(self._on_secret)
        self.accounts.add_handler(self._on_account)

    def _on_secret(self, etype: str, old: dict | None, new: dict | None) -> None:
        if etype != "DELETED" and new is not None and _account_name(new):
            self.enqueue(object_key(new))

    def _on_account(self, etype: str, old: dict | None, new: dict | None) -> None:
        """A deleted account: its token Secrets are looked at again (and deleted). A Secret's
        own events cover the rest, an account made again under the same name included."""
        if etype != "DELETED":
            return
        md = (old or new or {}).get("metadata") or {}
        for secret in self.secrets.list(md.get("namespace")):
            if _account_name(secret) == md.get("name"):
                self.enqueue(object_key(secret))

    async def _account(self, ns: str, name: str) -> dict | None:
        """From the cache, else from the store: a Secret made right after its account must
        not be deleted because the account's event has not arrived yet."""
        return self.accounts.get(ns, name) or \
            await self.registry.try_get(self.sa_res, ns, name)

    async def reconcile(self, key: str) -> None:
        if self.issuer is None:
            return
        await self.secrets.synced.wait()
        await self.accounts.synced.wait()
        ns, name = split_key(key)
        secret = self.secrets.get(ns, name)
        account_name = _account_name(secret) if secret else ""
        if not account_name or not ns or (secret["metadata"].get("deletionTimestamp")):
            return
        account = await self._account(ns, account_name)
        wanted_uid = (secret["metadata"].get("annotations") or {}).get(UID_ANNOTATION)
        uid = ((account or {}).get("metadata") or {}).get("uid")
        if account is None or (wanted_uid and wanted_uid != uid):
            await self._delete(secret)
            return
        if self._complete(secret, uid):
            return
        await self.registry.update_with(self.secret_res, ns, name,
                                        lambda s: self._filled(s, account))

    def _complete(self, secret: dict, uid: str) -> bool:
        data = secret.get("data") or {}
        return bool(data.get("token")) and data.get("ca.crt") == _b64(self.ca_pem) and \
            data.get("namespace") == _b64(secret["metadata"]["namespace"]) and \
            (secret["metadata"].get("annotations") or {}).get(UID_ANNOTATION) == uid

    def _filled(self, secret: dict, account: dict) -> dict | None:
        """The Secret with what upstream adds: the uid annotation, ca.crt, namespace and, if
        it has none, a token. None (no write) if the Secret changed hands meanwhile."""
        md = secret["metadata"]
        sa_md = account["metadata"]
        annotations = md.setdefault("annotations", {})
        if _account_name(secret) != sa_md["name"] or \
                annotations.get(UID_ANNOTATION, sa_md["uid"]) != sa_md["uid"]:
            return None
        annotations[UID_ANNOTATION] = sa_md["uid"]
        data = secret.setdefault("data", {})
        data["ca.crt"] = _b64(self.ca_pem)
        data["namespace"] = _b64(md["namespace"])
        if not data.get("token"):
            assert self.issuer is not None
            data["token"] = _b64(self.issuer.issue_legacy(md["namespace"], sa_md["name"],
                                                          sa_md["uid"], md["name"]))
        return secret

    async def _delete(self, secret: dict) -> None:
        md = secret["metadata"]
        log.info("deleting token secret %s/%s: its service account is gone", md["namespace"],
                 md["name"])
        try:
            await self.registry.delete(self.secret_res, md["namespace"], md["name"], {
                "preconditions": {"uid": md["uid"]}})
        except errors.StatusError as e:
            if e.code not in (404, 409):
                raise
