"""The cluster-scoped objects a built-in add-on brings (the local-path StorageClass, the k3py
IngressClass), kept at server start: created when missing, an edited one kept as it is, and
with the add-on disabled (`--disable NAME`) the one k3py made removed; a user's own object of
the same name, without k3py's `k3py.io/addon` annotation, is never touched."""

from __future__ import annotations

import logging

from k3py.api import errors
from k3py.api.objects import ADDON_ANNOTATION
from k3py.api.resources import Resource
from k3py.server.registry import Registry

__all__ = ["ADDON_ANNOTATION", "ensure_addon_object"]

log = logging.getLogger("k3py.controllers.addons")



async def ensure_addon_object(registry: Registry, res: Resource, obj: dict, addon: str,
                              enabled: bool) -> None:
    name = obj["metadata"]["name"]
    cur = await registry.try_get(res, None, name)
    if not enabled:
        made = ((cur or {}).get("metadata") or {}).get("annotations") or {}
        if cur is not None and made.get(ADDON_ANNOTATION) == addon:
            await registry.delete(res, None, name, {})
            log.info("%s disabled: removed %s %s", addon, obj.get("kind"), name)
        return
    if cur is None:
        try:
            await registry.create(res, None, obj)
        except errors.StatusError as e:
            if e.code != 409:  # another server of the same datastore made it
                raise
