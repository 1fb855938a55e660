"""EndpointsController: one core/v1 Endpoints per Service with a selector, listing the IPs of
the selected pods (ready in addresses, others in notReadyAddresses) per resolved port set.

Also holds the pod/port helpers EndpointSliceController shares; pods count once status.podIP
is set, and a named targetPort is resolved against each pod's container ports."""

from __future__ import annotations

import logging

from k3py.api import errors
from k3py.api.dualstack import family_of
from k3py.server.controllers.base import Controller, object_key, split_key

__all__ = ["EndpointsController", "ServicePodsController", "selects", "pod_ready",
           "pod_ports", "endpoint_pods", "build_subsets", "pod_ip", "address_families"]

log = logging.getLogger("k3py.controllers.endpoints")

Port = tuple[str, int, str, str]  # (name, port, protocol, appProtocol)


def selects(service: dict, pod: dict) -> bool:
    sel = (service.get("spec") or {}).get("selector")
    if not sel:
        return False
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in sel.items())


def pod_ready(pod: dict) -> bool:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def _container_port(pod: dict, name: str, protocol: str) -> int | None:
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == name and (p.get("protocol") or "TCP") == protocol:
                return p.get("containerPort")
    return None


def pod_ports(service: dict, pod: dict) -> tuple[Port, ...]:
    """The service's ports resolved for this pod (a named targetPort the pod lacks is left out)."""
    out = []
    for sp in (service.get("spec") or {}).get("ports") or []:
        protocol = sp.get("protocol") or "TCP"
        target = sp.get("targetPort", sp.get("port"))
        if isinstance(target, str) and not target.isdigit():
            number = _container_port(pod, target, protocol)
            if number is None:
                continue
        else:
            number = int(target if target is not None else sp.get("port"))
        out.append((sp.get("name") or "", int(number), protocol, sp.get("appProtocol") or ""))
    return tuple(out)


def endpoint_pods(service: dict, pods: list[dict]) -> list[dict]:
    """Selected pods that have an IP and have not finished."""
    out = []
    for pod in pods:
        if not selects(service, pod):
            continue
        status = pod.get("status") or {}
        if not status.get("podIP") or status.get("phase") in ("Succeeded", "Failed"):
            continue
        out.append(pod)
    return out


def pod_ip(pod: dict, family: str) -> str:
    """The pod's IP of `family` ("IPv4" or "IPv6") from status.podIPs; "" if it has none."""
    status = pod.get("status") or {}
    ips = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)]
    return next((ip for ip in ips or [status.get("podIP")] if ip and family_of(ip) == family),
                "")


def address_families(service: dict) -> list[str]:
    """The address families a Service's endpoints are listed in: its ipFamilies, else its
    ClusterIP's, else (a headless Service a server without dual-stack wrote) both."""
    spec = service.get("spec") or {}
    if spec.get("ipFamilies"):
        return list(spec["ipFamilies"])
    cip = spec.get("clusterIP") or ""
    return [family_of(cip)] if cip and cip != "None" else ["IPv4", "IPv6"]


def _address(service: dict, pod: dict) -> dict | None:
    """The Endpoints address of a pod: its IP of the Service's primary family (upstream's
    podToEndpointAddressForService), None if it has none."""
    md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    families = address_families(service)
    family = families[0] if len(families) == 1 or (service.get("spec") or {}).get(
        "ipFamilies") else family_of(pod["status"]["podIP"])
    ip = pod_ip(pod, family)
    if not ip:
        return None
    addr: dict = {"ip": ip}
    if spec.get("hostname") and spec.get("subdomain") == service["metadata"]["name"]:
        addr["hostname"] = spec["hostname"]
    if spec.get("nodeName"):
        addr["nodeName"] = spec["nodeName"]
    addr["targetRef"] = {"kind": "Pod", "namespace": md.get("namespace"),
                         "name": md.get("name"), "uid": md.get("uid")}
    return addr


def _port_dict(p: Port) -> dict:
    d: dict = {"port": p[1], "protocol": p[2]}
    if p[0]:
        d["name"] = p[0]
    if p[3]:
        d["appProtocol"] = p[3]
    return d


def build_subsets(service: dict, pods: list[dict]) -> list[dict]:
    """Endpoints subsets, one per distinct resolved port set, addresses sorted by IP."""
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    groups: dict[tuple[Port, ...], tuple[list[dict], list[dict]]] = {}
    for pod in endpoint_pods(service, pods):
        terminating = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
        if terminating and not publish:
            continue
        ports = pod_ports(service, pod)
        if (service.get("spec") or {}).get("ports") and not ports:
            continue
        addr = _address(service, pod)
        if addr is None:
            continue
        ready, not_ready = groups.setdefault(ports, ([], []))
        (ready if publish or pod_ready(pod) else not_ready).append(addr)
    subsets = []
    for ports, (ready, not_ready) in sorted(groups.items()):
        subset: dict = {}
        if ready:
            subset["addresses"] = sorted(ready, key=lambda a: a["ip"])
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: a["ip"])
        if ports:
            subset["ports"] = [_port_dict(p) for p in ports]
        subsets.append(subset)
    return subsets


class ServicePodsController(Controller):
    """Reconciles a Service key whenever the service or a pod it selects changes."""

    def setup(self) -> None:
        self.services = self.ctx.informers.informer("", "services")
        self.pods = self.ctx.informers.informer("", "pods")
        self.services.add_handler(self._on_service)
        self.pods.add_handler(self._on_pod)

    def _on_service(self, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new if new is not None else old
        if obj is not None:
            self.enqueue(object_key(obj))

    def _on_pod(self, etype: str, old: dict | None, new: dict | None) -> None:
        for pod in (old, new):
            if pod is None:
                continue
            ns = (pod.get("metadata") or {}).get("namespace")
            for svc in self.services.list(ns):
                if selects(svc, pod):
                    self.enqueue(object_key(svc))

    def service_and_pods(self, key: str) -> tuple[str | None, str, dict | None, list[dict]]:
        ns, name = split_key(key)
        svc = self.services.get(ns, name)
        return ns, name, svc, self.pods.list(ns) if svc is not None else []


class EndpointsController(ServicePodsController):
    name = "endpoints-controller"

    async def reconcile(self, key: str) -> None:
        ns, name, svc, pods = self.service_and_pods(key)
        res = self.ctx.resource("", "endpoints")
        if svc is None:
            current = await self.registry.try_get(res, ns, name)
            if current is not None and not await self._service_exists(ns, name):
                try:
                    await self.registry.delete(res, ns, name)
                except errors.StatusError as e:
                    if e.code != 404:
                        raise
            return
        if not (svc.get("spec") or {}).get("selector"):
            return  # endpoints of a selector-less service are the user's
        subsets = build_subsets(svc, pods)
        labels = dict((svc.get("metadata") or {}).get("labels") or {})
        if not (svc.get("spec") or {}).get("clusterIP") or \
                svc["spec"].get("clusterIP") == "None":
            labels["service.kubernetes.io/headless"] = ""

        def mutate(cur: dict) -> dict | None:
            if (cur.get("subsets") or []) == subsets and \
                    (cur["metadata"].get("labels") or {}) == labels:
                return None
            cur["subsets"] = subsets
            if labels:
                cur["metadata"]["labels"] = labels
            else:
                cur["metadata"].pop("labels", None)
            return cur
        out = await self.registry.update_with(res, ns, name, mutate)
        if out is not None or await self.registry.try_get(res, ns, name) is not None:
            return
        md: dict = {"name": name, "namespace": ns}
        if labels:
            md["labels"] = labels
        try:
            await self.registry.create(res, ns, {"apiVersion": "v1", "kind": "Endpoints",
                                                 "metadata": md, "subsets": subsets})
        except errors.StatusError as e:
            if e.code == 409:
                self.enqueue(key, after=0.1)
            elif e.code not in (403, 404):
                raise

    async def _service_exists(self, ns: str | None, name: str) -> bool:
        return await self.registry.try_get(self.ctx.resource("", "services"), ns, name) \
            is not None
