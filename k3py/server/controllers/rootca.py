"""RootCAController: ConfigMap kube-root-ca.crt {ca.crt: <server CA PEM>} in every active
namespace, as upstream's root-ca-cert-publisher keeps it.

In-cluster clients verify the API server with this CA: the service-account admission mounts
it into every pod's kube-api-access volume (k3py.server.serviceaccounts). The CA is read from
<tls-dir>/server-ca.crt, the same file that signs the serving certificate."""

from __future__ import annotations

import logging
import os

from k3py.api import errors
from k3py.server.controllers.base import Controller, ControllerContext

__all__ = ["RootCAController", "ROOT_CA_CONFIGMAP", "DESCRIPTION_ANNOTATION", "server_ca"]

log = logging.getLogger("k3py.controllers.rootca")

ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
DESCRIPTION_ANNOTATION = "kubernetes.io/description"
_DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when "
                "using internal endpoints such as the internal service IP or "
                "kubernetes.default.svc. No other usage is guaranteed across distributions "
                "of Kubernetes clusters.")


def server_ca(ctx: ControllerContext) -> str | None:
    """The server CA's PEM that pods are told to trust: given to the controllers
    (extra["root_ca_pem"]) or read from the server's TLS dir; None when there is none."""
    given = ctx.extra.get("root_ca_pem")
    if given or ctx.config is None:
        return given or None
    try:
        with open(os.path.join(ctx.config.tls_dir, "server-ca.crt")) as f:
            return f.read()
    except OSError:
        return None


class RootCAController(Controller):
    name = "root-ca-cert-publisher"
    workers = 2

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.cm_res = ctx.resource("", "configmaps")
        self.ca_pem: str | None = server_ca(ctx)
        if self.ca_pem is None:
            log.warning("no server CA certificate found: kube-root-ca.crt is not published")

    def setup(self) -> None:
        self.namespaces = self.ctx.informers.informer("", "namespaces")
        self.configmaps = self.ctx.informers.informer("", "configmaps")
        self.namespaces.add_handler(self._on_namespace)
        self.configmaps.add_handler(self._on_configmap)

    def _on_namespace(self, etype: str, old: dict | None, new: dict | None) -> None:
        if etype != "DELETED" and new is not None:
            self.enqueue(new["metadata"]["name"])

    def _on_configmap(self, etype: str, old: dict | None, new: dict | None) -> None:
        md = (new or old or {}).get("metadata") or {}
        if md.get("name") == ROOT_CA_CONFIGMAP:
            self.enqueue(md.get("namespace"))

    def _wanted(self, ns: str) -> dict:
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": ns,
                             "annotations": {DESCRIPTION_ANNOTATION: _DESCRIPTION}},
                "data": {"ca.crt": self.ca_pem}}

    async def reconcile(self, key: str) -> None:
        if self.ca_pem is None:
            return
        await self.namespaces.synced.wait()
        await self.configmaps.synced.wait()
        ns = self.namespaces.get(None, key)
        if ns is None or (ns.get("metadata") or {}).get("deletionTimestamp") or \
                (ns.get("status") or {}).get("phase") == "Terminating":
            return
        cur = self.configmaps.get(key, ROOT_CA_CONFIGMAP)
        try:
            if cur is None:
                await self.registry.create(self.cm_res, key, self._wanted(key))
                return
            if (cur.get("data") or {}) == {"ca.crt": self.ca_pem}:
                return

            def fix(obj: dict) -> dict | None:
                if (obj.get("data") or {}) == {"ca.crt": self.ca_pem}:
                    return None
                obj["data"] = {"ca.crt": self.ca_pem}
                obj.pop("binaryData", None)
                return obj
            await self.registry.update_with(self.cm_res, key, ROOT_CA_CONFIGMAP, fix)
        except errors.StatusError as e:
            if e.code not in (403, 404, 409):
                raise
