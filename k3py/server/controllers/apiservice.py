"""APIServiceController: the APIServices kube-apiserver keeps for itself, and their status.

Three upstream controllers in one: autoregister (a local APIService per built-in group
version, created at start, label automanaged=onstart), crdregistration (one per served CRD
group version, label automanaged=true, removed with the last CRD serving it) and the
available-condition controller (Available=True reason Local for local ones; for one backed by
a Service, why it is not available: k3py does not proxy to aggregated API servers). Reads
the served resources, CRDs, Services and Endpoints; writes apiservices and apiservices/status.
The apiserver answers 503 for the group versions of non-local ones (k3py.server.apiserver.app)."""

from __future__ import annotations

import logging

from k3py.api import errors
from k3py.api.kinds.apiregistration import (
    AUTOMANAGED_LABEL,
    GROUP,
    available_condition,
    local_apiservice,
    service_of,
)
from k3py.api.objects import now_rfc3339
from k3py.server.controllers.base import Controller, ControllerContext

__all__ = ["APIServiceController", "LOCAL_KEY"]

log = logging.getLogger("k3py.controllers.apiservice")

LOCAL_KEY = "@local"  # the queue key of "sync the automanaged APIServices"
_CRD_GROUP = "apiextensions.k8s.io"


class APIServiceController(Controller):
    name = "apiservice"
    workers = 1  # one writer: local syncs and status updates never race each other

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.res = ctx.resource(GROUP, "apiservices")
        self._started = False  # "onstart" ones are created once, at the first sync

    def setup(self) -> None:
        inf = self.ctx.informers
        self.apiservices = inf.informer(GROUP, "apiservices")
        self.crds = inf.informer(_CRD_GROUP, "customresourcedefinitions")
        self.services = inf.informer("", "services")
        self.endpoints = inf.informer("", "endpoints")
        self.apiservices.add_handler(self._on_apiservice)
        self.crds.add_handler(lambda *_: self.enqueue(LOCAL_KEY))
        self.services.add_handler(self._on_backend)
        self.endpoints.add_handler(self._on_backend)
        self.enqueue(LOCAL_KEY)

    def _on_apiservice(self, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old or {}
        if etype == "DELETED":
            self.enqueue(LOCAL_KEY)  # a CRD group's one comes back while its CRD serves it
        else:
            self.enqueue(obj["metadata"]["name"])

    def _on_backend(self, etype: str, old: dict | None, new: dict | None) -> None:
        md = (new or old or {}).get("metadata") or {}
        for svc in self.apiservices.list():
            ref = service_of(svc)
            if ref and ref.get("namespace") == md.get("namespace") and \
                    ref.get("name") == md.get("name"):
                self.enqueue(svc["metadata"]["name"])

    async def reconcile(self, key: str) -> None:
        for informer in (self.apiservices, self.crds, self.services, self.endpoints):
            await informer.synced.wait()
        if key == LOCAL_KEY:
            await self._sync_local()
        else:
            await self._sync_status(key)

    def _wanted(self) -> dict[str, dict]:
        """The automanaged APIServices that should exist, by name."""
        wanted: dict[str, dict] = {}
        for group, versions in self.registry.resources.groups().items():
            if group == GROUP:
                continue  # the aggregator's own group has none, as upstream
            for version in versions:
                served = self.registry.resources.in_group_version(group, version)
                if served and not any(r.crd for r in served):
                    obj = local_apiservice(group, version)
                    if obj is not None:
                        wanted[obj["metadata"]["name"]] = obj
        for crd in self.crds.list():
            spec = crd.get("spec") or {}
            for v in spec.get("versions") or []:
                obj = local_apiservice(spec.get("group") or "", v.get("name") or "", crd=True)
                if v.get("served") and obj is not None:
                    wanted.setdefault(obj["metadata"]["name"], obj)
        return wanted

    async def _sync_local(self) -> None:
        wanted = self._wanted()
        for name, obj in wanted.items():
            managed = obj["metadata"]["labels"][AUTOMANAGED_LABEL]
            if self.apiservices.get(None, name) is None and (managed == "true" or
                                                              not self._started):
                try:
                    await self.registry.create(self.res, None, obj)
                except errors.StatusError as e:
                    if e.code != 409:
                        raise
        # "onstart" ones are removed at start when no longer served (metrics.k8s.io after a
        # restart with --disable metrics-server), CRD ones whenever their CRD goes
        removable = ("true",) if self._started else ("true", "onstart")
        self._started = True
        for cur in self.apiservices.list():
            md = cur.get("metadata") or {}
            if (md.get("labels") or {}).get(AUTOMANAGED_LABEL) in removable and \
                    md.get("name") not in wanted and not md.get("deletionTimestamp"):
                try:
                    await self.registry.delete(self.res, None, md["name"])
                except errors.StatusError as e:
                    if e.code != 404:
                        raise

    async def _sync_status(self, name: str) -> None:
        obj = self.apiservices.get(None, name)
        if obj is None:
            return
        ref = service_of(obj)
        service = endpoints = None
        if ref is not None:
            ns, svc_name = ref.get("namespace"), ref.get("name") or ""
            service = self.services.get(ns, svc_name)
            endpoints = self.endpoints.get(ns, svc_name)
        status, reason, message = available_condition(obj, service, endpoints)

        def write(cur: dict) -> dict | None:
            conditions = list((cur.get("status") or {}).get("conditions") or [])
            old = next((c for c in conditions if c.get("type") == "Available"), None)
            if old is not None and (old.get("status"), old.get("reason"),
                                    old.get("message")) == (status, reason, message):
                return None
            changed = old is None or old.get("status") != status
            cond = {"type": "Available", "status": status,
                    "lastTransitionTime": now_rfc3339() if changed
                    else old.get("lastTransitionTime"),
                    "reason": reason, "message": message}
            conditions = [c for c in conditions if c.get("type") != "Available"] + [cond]
            cur["status"] = {**(cur.get("status") or {}), "conditions": conditions}
            return cur
        await self.registry.update_with(self.res, None, name, write, subresource="status")
