"""K3s's ServiceLB: `status.loadBalancer.ingress` of each LoadBalancer Service lists the node
IPs that serve it, and every node's service rules (agent/network/proxy.py) forward those
addresses' ports to the Service. Off with `k3py server --disable servicelb`.

The nodes are those K3s's svclb DaemonSet would run a ready pod on: Ready nodes whose taints
its pods tolerate; only nodes labelled `svccontroller.k3s.cattle.io/enablelb=true` once any
node has that label (and the Service's `lbpool` label, if set, among them); with
externalTrafficPolicy Local only nodes with a ready endpoint. A node whose agent reports one
of the Service's ports taken (something listens there), or where an older LoadBalancer
Service has the same port, is left out with an Event on the Service, as a svclb pod that
cannot get its host port. ExternalIPs are listed when any of those nodes has one, else
InternalIPs (K3s). A Service with a loadBalancerClass is left to that class's controller."""

from __future__ import annotations

import ipaddress
import json
import logging

from k3py.api.servicelb import (
    ENABLE_LB_LABEL,
    LB_POOL_LABEL,
    PORTS_IN_USE_ANNOTATION,
    TOLERATIONS_ANNOTATION,
    format_ports,
    lb_ports,
    parse_ports,
    wants_load_balancer,
)
from k3py.server.controllers.base import Controller, object_key
from k3py.server.controllers.daemonset import node_should_run

__all__ = ["ServiceLBController", "ADDON"]

log = logging.getLogger("k3py.controllers.servicelb")

ADDON = "servicelb"  # its --disable name
# what K3s's svclb pods tolerate besides a DaemonSet's defaults
_SVCLB_TOLERATIONS = (
    {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
     "effect": "NoSchedule"},
    {"key": "CriticalAddonsOnly", "operator": "Exists"},
)


class ServiceLBController(Controller):
    name = "servicelb"

    def setup(self) -> None:
        self.services = self.ctx.informers.informer("", "services")
        self.nodes = self.ctx.informers.informer("", "nodes")
        self.slices = self.ctx.informers.informer("discovery.k8s.io", "endpointslices")
        self.services.add_handler(self._on_service)
        self.nodes.add_handler(self._on_node)
        self.slices.add_handler(self._on_slice)
        self._left_out: dict[str, dict[str, str]] = {}  # service key -> node -> why

    def _on_service(self, etype: str, old: dict | None, new: dict | None) -> None:
        views = [_service_view(o) for o in (old, new) if o is not None]
        if not any(v[0] == "LoadBalancer" for v in views):
            return
        if etype != "MODIFIED" or views[0] != views[-1]:
            self._enqueue_all()  # a LoadBalancer port came or went: others may share it
        self.enqueue(object_key(new or old or {}))

    def _on_node(self, etype: str, old: dict | None, new: dict | None) -> None:
        if old is not None and new is not None and _node_view(old) == _node_view(new):
            return  # a heartbeat: nothing ServiceLB looks at changed
        self._enqueue_all()

    def _on_slice(self, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old or {}
        md = obj.get("metadata") or {}
        svc = (md.get("labels") or {}).get("kubernetes.io/service-name")
        if svc:
            key = f"{md.get('namespace')}/{svc}"
            cur = self.services.cache.get(key)
            if cur is not None and (cur.get("spec") or {}).get(
                    "externalTrafficPolicy") == "Local":
                self.enqueue(key)

    def _enqueue_all(self) -> None:
        for key, svc in list(self.services.cache.items()):
            if (svc.get("spec") or {}).get("type") == "LoadBalancer":
                self.enqueue(key)

    async def reconcile(self, key: str) -> None:
        svc = self.services.cache.get(key)
        if svc is None:
            self._left_out.pop(key, None)
            return
        spec = svc.get("spec") or {}
        if spec.get("loadBalancerClass"):
            return  # another controller's
        if not wants_load_balancer(svc):
            self._left_out.pop(key, None)
            if _ingress(svc):  # no longer a LoadBalancer: its addresses go (upstream)
                await self._write(svc, [])
            return
        ips, left_out = self.serving(svc)
        await self._report_left_out(key, svc, left_out)
        want = [{"ip": ip, "ipMode": "VIP"} for ip in ips]
        if _ingress(svc) != want:
            await self._write(svc, want)
            # a Service's first and later changes, as K3s reports them
            if want:
                await self.ctx.recorder.record(
                    svc, "Normal", "UpdatedLoadBalancer",
                    f"Updated LoadBalancer with new IPs: {_ips(_ingress(svc))} -> "
                    f"[{' '.join(ips)}]")
            else:
                await self.ctx.recorder.record(
                    svc, "Warning", "UnAvailableLoadBalancer",
                    "There are no available nodes for LoadBalancer")

    def serving(self, svc: dict) -> tuple[list[str], dict[str, str]]:
        """(the ingress IPs, {node left out for a port: why})."""
        nodes = sorted(self.nodes.cache.values(), key=lambda n: n["metadata"]["name"])
        pod_spec = _svclb_pod_spec(svc, any(ENABLE_LB_LABEL in _labels(n) for n in nodes))
        local = _nodes_with_ready_endpoints(self.slices.list(svc["metadata"]["namespace"]),
                                            svc["metadata"]["name"]) \
            if (svc.get("spec") or {}).get("externalTrafficPolicy") == "Local" else None
        ports = set(lb_ports(svc))
        older = self._older_lb_ports(svc)
        chosen: list[dict] = []
        left_out: dict[str, str] = {}
        for node in nodes:
            name = node["metadata"]["name"]
            if not _ready(node) or not node_should_run(pod_spec, node)[0] or \
                    (local is not None and name not in local):
                continue
            taken = ports & parse_ports(_annotations(node).get(PORTS_IN_USE_ANNOTATION, ""))
            if taken:
                left_out[name] = f"port {format_ports(taken)} is already in use on node {name}"
                continue
            shared = {p: other for p, other in older.items() if p in ports}
            if shared:
                p, other = sorted(shared.items())[0]
                left_out[name] = (f"port {format_ports({p})} on node {name} is already used "
                                  f"by LoadBalancer {other}")
                continue
            chosen.append(node)
        return _node_ips(chosen, svc), left_out

    def _older_lb_ports(self, svc: dict) -> dict[tuple[str, int], str]:
        """Ports of ServiceLB's other Services created before `svc` (the first one keeps a
        port, as the first svclb pod keeps its host port)."""
        mine = _age_key(svc)
        out: dict[tuple[str, int], str] = {}
        for other in self.services.cache.values():
            if wants_load_balancer(other) and _age_key(other) < mine:
                for p in lb_ports(other):
                    out.setdefault(p, object_key(other))
        return out

    async def _report_left_out(self, key: str, svc: dict, left_out: dict[str, str]) -> None:
        before = self._left_out.get(key, {})
        self._left_out[key] = left_out
        for node, why in sorted(left_out.items()):
            if before.get(node) != why:
                await self.ctx.recorder.record(svc, "Warning", "PortInUse",
                                               f"{why}: node {node} left out of the LoadBalancer")

    async def _write(self, svc: dict, ingress: list[dict]) -> None:
        md = svc["metadata"]
        uid = md.get("uid")

        def put(cur: dict) -> dict | None:
            if cur["metadata"].get("uid") != uid:
                return None
            lb = cur.setdefault("status", {}).setdefault("loadBalancer", {})
            if (lb.get("ingress") or []) == ingress:
                return None
            if ingress:
                lb["ingress"] = ingress
            else:
                lb.pop("ingress", None)
            return cur
        await self.registry.update_with(self.ctx.resource("", "services"), md["namespace"],
                                        md["name"], put, subresource="status")


def _svclb_pod_spec(svc: dict, selective: bool) -> dict:
    """The scheduling part of the pod K3s's svclb DaemonSet runs for `svc`."""
    tolerations = list(_SVCLB_TOLERATIONS)
    extra = _annotations(svc).get(TOLERATIONS_ANNOTATION)
    if extra:
        try:
            parsed = json.loads(extra)
            tolerations += [t for t in parsed if isinstance(t, dict)] \
                if isinstance(parsed, list) else []
        except ValueError:
            log.warning("%s: %s is not a JSON list of tolerations", object_key(svc),
                        TOLERATIONS_ANNOTATION)
    spec: dict = {"tolerations": tolerations}
    if selective:
        spec["nodeSelector"] = {ENABLE_LB_LABEL: "true"}
        pool = _labels(svc).get(LB_POOL_LABEL)
        if pool:
            spec["nodeSelector"][LB_POOL_LABEL] = pool
    return spec


def _node_ips(nodes: list[dict], svc: dict) -> list[str]:
    by_type: dict[str, set[str]] = {"ExternalIP": set(), "InternalIP": set()}
    for node in nodes:
        for addr in (node.get("status") or {}).get("addresses") or []:
            if addr.get("type") in by_type and addr.get("address"):
                by_type[addr["type"]].add(addr["address"])
    ips = by_type["ExternalIP"] or by_type["InternalIP"]
    out = []
    for family in (svc.get("spec") or {}).get("ipFamilies") or ["IPv4"]:
        version = 6 if family == "IPv6" else 4
        out += sorted((ip for ip in ips if _version(ip) == version),
                      key=lambda ip: ipaddress.ip_address(ip))
    return out


def _nodes_with_ready_endpoints(slices: list[dict], service: str) -> set[str]:
    out = set()
    for es in slices:
        if ((es.get("metadata") or {}).get("labels") or {}).get(
                "kubernetes.io/service-name") != service:
            continue
        for ep in es.get("endpoints") or []:
            if (ep.get("targetRef") or {}).get("kind") == "Pod" and \
                    (ep.get("conditions") or {}).get("ready") and ep.get("nodeName"):
                out.add(ep["nodeName"])
    return out


def _node_view(node: dict) -> tuple:
    """What ServiceLB reads of a Node."""
    return (_labels(node), _annotations(node).get(PORTS_IN_USE_ANNOTATION),
            (node.get("spec") or {}).get("taints"),
            (node.get("status") or {}).get("addresses"), _ready(node))


def _service_view(svc: dict) -> tuple:
    spec = svc.get("spec") or {}
    return (spec.get("type"), spec.get("loadBalancerClass"), lb_ports(svc))


def _ready(node: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def _ingress(svc: dict) -> list[dict]:
    return ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []


def _ips(ingress: list[dict]) -> str:
    """As K3s's Event prints them (a Go slice)."""
    return f"[{' '.join(i.get('ip') or i.get('hostname') or '' for i in ingress)}]"


def _age_key(svc: dict) -> tuple[str, str]:
    md = svc.get("metadata") or {}
    return (md.get("creationTimestamp") or "", object_key(svc))


def _labels(obj: dict) -> dict:
    return (obj.get("metadata") or {}).get("labels") or {}


def _annotations(obj: dict) -> dict:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _version(ip: str) -> int:
    try:
        return ipaddress.ip_address(ip).version
    except ValueError:
        return 0
