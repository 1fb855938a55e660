"""TokenCleaner: deletes bootstrap token Secrets once they expire, as upstream's token
cleaner in kube-controller-manager does (k3py.api.bootstraptoken defines them; the join route
already refuses an expired one, this keeps `k3py token list` and kube-system tidy)."""

from __future__ import annotations

import datetime as _dt
import logging

from k3py.api import bootstraptoken, errors
from k3py.server.controllers.base import Controller, object_key, split_key

__all__ = ["TokenCleaner"]

log = logging.getLogger("k3py.controllers.tokencleaner")


def _expires_in(secret: dict, now: _dt.datetime) -> float | None:
    """Seconds until the token Secret expires (<= 0: expired), None if it never does or is
    not a bootstrap token."""
    if secret.get("type") != bootstraptoken.SECRET_TYPE:
        return None
    expiration = bootstraptoken.string_data(secret).get("expiration")
    if not expiration:
        return None
    try:
        expires = _dt.datetime.fromisoformat(expiration.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (expires - now).total_seconds()


class TokenCleaner(Controller):
    name = "token-cleaner"

    def setup(self) -> None:
        self.secrets = self.ctx.informers.informer("", "secrets")
        self.secrets.add_handler(self._on_secret)

    def _on_secret(self, etype: str, old: dict | None, new: dict | None) -> None:
        if new is None or etype == "DELETED" or \
                (new.get("metadata") or {}).get("namespace") != bootstraptoken.NAMESPACE:
            return
        left = _expires_in(new, _dt.datetime.now(_dt.UTC))
        if left is not None:
            self.enqueue(object_key(new), after=max(0.0, left))

    async def reconcile(self, key: str) -> None:
        ns, name = split_key(key)
        secret = self.secrets.get(ns, name)
        left = _expires_in(secret, _dt.datetime.now(_dt.UTC)) if secret else None
        if left is None:
            return
        if left > 0:  # the clock is behind the enqueue's: come back
            self.enqueue(key, after=left)
            return
        log.info("bootstrap token %s expired; deleting it", name)
        try:
            await self.registry.delete(self.ctx.resource("", "secrets"), ns, name, {
                "preconditions": {"uid": secret["metadata"]["uid"]}})
        except errors.StatusError as e:
            if e.code not in (404, 409):
                raise
