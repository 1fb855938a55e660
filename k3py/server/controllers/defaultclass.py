"""Upstream's DefaultStorageClass admission step: a claim created without a storageClassName
gets the default StorageClass (the newest of several defaults, as upstream since 1.26), so
`kubectl apply` of a class-less PVC from a K3s tutorial lands on local-path.

bootstrap.install_admission adds it to the server's chain as a mutator on create; an explicit
`storageClassName: ""` asks for no class and is left alone."""

from __future__ import annotations

from k3py.api.resources import Resource
from k3py.server.controllers.volumematch import ANN_BETA_CLASS, is_default_class
from k3py.server.registry import Registry

__all__ = ["DefaultStorageClass", "default_class_name"]


def default_class_name(classes: list[dict]) -> str:
    defaults = [c for c in classes if is_default_class(c)]
    if not defaults:
        return ""
    newest = max(defaults, key=lambda c: ((c.get("metadata") or {}).get("creationTimestamp")
                                          or "", (c.get("metadata") or {}).get("name") or ""))
    return newest["metadata"]["name"]


class DefaultStorageClass:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def __call__(self, res: Resource, obj: dict) -> None:
        if res.group != "" or res.plural != "persistentvolumeclaims":
            return
        spec = obj.get("spec")
        if not isinstance(spec, dict) or spec.get("storageClassName") is not None:
            return
        if ANN_BETA_CLASS in ((obj.get("metadata") or {}).get("annotations") or {}):
            return
        sc_res = self.registry.resources.get("storage.k8s.io", "v1", "storageclasses")
        name = default_class_name((await self.registry.list(sc_res, None))["items"])
        if name:
            spec["storageClassName"] = name
