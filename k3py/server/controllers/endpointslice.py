"""EndpointSliceController: discovery.k8s.io/v1 EndpointSlices for Services with a selector,
one slice per address family of the Service (its ipFamilies) and distinct resolved port set,
owned by the Service; a pod is listed under each family it has an IP of.

Slices carry kubernetes.io/service-name and managed-by endpointslice-controller.k8s.io;
endpoints have ready/serving/terminating conditions, nodeName and a Pod targetRef."""

from __future__ import annotations

import logging
import time

from k3py.api import errors
from k3py.api.objects import make_controller_ref
from k3py.server.controllers.endpoints import (
    Port,
    ServicePodsController,
    address_families,
    endpoint_pods,
    pod_ip,
    pod_ports,
    pod_ready,
)

__all__ = ["EndpointSliceController", "build_slices", "SERVICE_NAME_LABEL", "MANAGED_BY_LABEL",
           "MANAGED_BY"]

log = logging.getLogger("k3py.controllers.endpointslice")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
MAX_ENDPOINTS = 100


def _endpoint(pod: dict, ip: str) -> dict:
    md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    ready = pod_ready(pod)
    terminating = bool(md.get("deletionTimestamp"))
    ep: dict = {"addresses": [ip],
                "conditions": {"ready": ready and not terminating, "serving": ready,
                               "terminating": terminating}}
    if spec.get("hostname"):
        ep["hostname"] = spec["hostname"]
    if spec.get("nodeName"):
        ep["nodeName"] = spec["nodeName"]
    ep["targetRef"] = {"kind": "Pod", "namespace": md.get("namespace"), "name": md.get("name"),
                       "uid": md.get("uid")}
    return ep


def _port(p: Port) -> dict:
    d: dict = {"name": p[0], "port": p[1], "protocol": p[2]}
    if p[3]:
        d["appProtocol"] = p[3]
    return d


def build_slices(service: dict, pods: list[dict], family: str = "IPv4"
                 ) -> list[tuple[list[dict], list[dict]]]:
    """(ports, endpoints) per slice of address type `family` wanted, endpoints sorted by
    address; one slice with no ports and no endpoints when there are none."""
    groups: dict[tuple[Port, ...], list[dict]] = {}
    has_ports = bool((service.get("spec") or {}).get("ports"))
    for pod in endpoint_pods(service, pods):
        ports = pod_ports(service, pod)
        ip = pod_ip(pod, family)
        if has_ports and not ports or not ip:
            continue
        groups.setdefault(ports, []).append(_endpoint(pod, ip))
    if not groups:
        groups[()] = []
    out = []
    for ports, eps in sorted(groups.items()):
        eps.sort(key=lambda e: e["addresses"][0])
        for i in range(0, max(len(eps), 1), MAX_ENDPOINTS):
            out.append(([_port(p) for p in ports], eps[i:i + MAX_ENDPOINTS]))
    return out


class EndpointSliceController(ServicePodsController):
    name = "endpointslice-controller"

    def setup(self) -> None:
        super().setup()
        self.slices = self.ctx.informers.informer("discovery.k8s.io", "endpointslices")
        self.slices.add_index("service", self._slice_service)
        self.slices.add_handler(self._on_slice)
        self._created: dict[str, dict[str, float]] = {}

    @staticmethod
    def _slice_service(obj: dict) -> list[str]:
        md = obj.get("metadata") or {}
        labels = md.get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or SERVICE_NAME_LABEL not in labels:
            return []
        return [f"{md.get('namespace')}/{labels[SERVICE_NAME_LABEL]}"]

    def _on_slice(self, etype: str, old: dict | None, new: dict | None) -> None:
        if etype == "DELETED" and old is not None:
            for key in self._slice_service(old):
                self.enqueue(key)

    async def reconcile(self, key: str) -> None:
        ns, name, svc, pods = self.service_and_pods(key)
        res = self.ctx.resource("discovery.k8s.io", "endpointslices")
        # slices we created but the cache has not seen yet (or we would create them twice)
        pending = self._created.setdefault(key, {})
        for n, when in list(pending.items()):
            if self.slices.get(ns, n) is not None or time.monotonic() - when > 5:
                del pending[n]
        if pending:
            self.enqueue(key, after=0.2)
            return
        existing = [s for s in self.slices.by_index("service", key)
                    if not (s.get("metadata") or {}).get("deletionTimestamp")]
        if svc is None or not (svc.get("spec") or {}).get("selector"):
            if svc is None and await self.registry.try_get(
                    self.ctx.resource("", "services"), ns, name) is not None:
                return  # our cache is behind
            for s in existing:
                await self._delete(res, s)
            return
        wanted = [(family, ports, endpoints) for family in address_families(svc)
                  for ports, endpoints in build_slices(svc, pods, family)]
        labels = {**((svc.get("metadata") or {}).get("labels") or {}),
                  SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY}
        if (svc.get("spec") or {}).get("clusterIP") == "None":
            labels["service.kubernetes.io/headless"] = ""
        owner = make_controller_ref(svc)
        uid = svc["metadata"].get("uid")
        # keep slices owned by this incarnation of the service, best port match first
        reusable = [s for s in existing
                    if any(r.get("uid") == uid for r in s["metadata"].get("ownerReferences") or [])]
        stale = [s for s in existing if s not in reusable]
        for family, ports, endpoints in wanted:
            # addressType is immutable: a slice is reused only for its own family
            mine = [s for s in reusable if s.get("addressType", "IPv4") == family]
            match = next((s for s in mine if (s.get("ports") or []) == ports), None) or \
                (mine[0] if mine else None)
            if match is None:
                made = await self._create(res, ns, name, labels, owner, family, ports,
                                          endpoints)
                if made:
                    self._created.setdefault(key, {})[made] = time.monotonic()
                continue
            reusable.remove(match)
            await self._update(res, match, labels, ports, endpoints)
        for s in reusable + stale:
            await self._delete(res, s)

    async def _create(self, res, ns: str | None, name: str, labels: dict, owner: dict,
                      family: str, ports: list[dict], endpoints: list[dict]) -> str | None:
        body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"generateName": f"{name}-", "namespace": ns, "labels": labels,
                             "ownerReferences": [owner]},
                "addressType": family, "endpoints": endpoints, "ports": ports}
        try:
            return (await self.registry.create(res, ns, body))["metadata"]["name"]
        except errors.StatusError as e:
            if e.code not in (403, 404, 409):
                raise
        return None

    async def _update(self, res, current: dict, labels: dict, ports: list[dict],
                      endpoints: list[dict]) -> None:
        md = current["metadata"]

        def mutate(cur: dict) -> dict | None:
            if cur["metadata"].get("uid") != md.get("uid"):
                return None
            if (cur.get("endpoints") or []) == endpoints and (cur.get("ports") or []) == ports \
                    and (cur["metadata"].get("labels") or {}) == labels:
                return None
            cur["endpoints"] = endpoints
            cur["ports"] = ports
            cur["metadata"]["labels"] = labels
            return cur
        await self.registry.update_with(res, md.get("namespace"), md["name"], mutate)

    async def _delete(self, res, current: dict) -> None:
        md = current["metadata"]
        try:
            await self.registry.delete(res, md.get("namespace"), md["name"],
                                       {"preconditions": {"uid": md.get("uid")}})
        except errors.StatusError as e:
            if e.code not in (404, 409):
                raise
