"""K3s's ServiceLB as both ends see it: which Services it serves, the node labels that choose
its nodes, and the Node annotation through which a node reports the LoadBalancer ports that
something else already listens on there. The server's ServiceLBController writes
`status.loadBalancer.ingress`; every node's service rules forward those addresses."""

from __future__ import annotations

import ipaddress

__all__ = ["ENABLE_LB_LABEL", "LB_POOL_LABEL", "TOLERATIONS_ANNOTATION",
           "PORTS_IN_USE_ANNOTATION", "wants_load_balancer", "lb_ports", "format_ports",
           "parse_ports", "ingress_ips", "SOURCE_RANGES_ANNOTATION", "source_ranges"]

ENABLE_LB_LABEL = "svccontroller.k3s.cattle.io/enablelb"
LB_POOL_LABEL = "svccontroller.k3s.cattle.io/lbpool"
TOLERATIONS_ANNOTATION = "svccontroller.k3s.cattle.io/tolerations"
# "TCP/80,UDP/53": LoadBalancer ports a node cannot serve (something listens there already);
# written by the node's agent, read by the server to leave that node out
PORTS_IN_USE_ANNOTATION = "k3py.io/servicelb-ports-in-use"
# upstream's older form of spec.loadBalancerSourceRanges, comma-separated; the field wins
SOURCE_RANGES_ANNOTATION = "service.beta.kubernetes.io/load-balancer-source-ranges"


def wants_load_balancer(svc: dict) -> bool:
    """A LoadBalancer Service with no loadBalancerClass: ServiceLB's (as the upstream service
    controller decides; a Service with a class belongs to that class's controller)."""
    spec = svc.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass")


def lb_ports(svc: dict) -> list[tuple[str, int]]:
    """(protocol, port) of each port of the Service, as the node serves them."""
    return [(str(p.get("protocol") or "TCP"), p["port"])
            for p in (svc.get("spec") or {}).get("ports") or []
            if isinstance(p, dict) and isinstance(p.get("port"), int)]


def format_ports(ports: set[tuple[str, int]]) -> str:
    return ",".join(f"{proto}/{port}" for proto, port in sorted(ports))


def parse_ports(text: str) -> set[tuple[str, int]]:
    out = set()
    for item in (text or "").split(","):
        proto, _, port = item.strip().partition("/")
        if proto and port.isdigit():
            out.add((proto, int(port)))
    return out


def ingress_ips(svc: dict) -> list[str]:
    """The addresses of `status.loadBalancer.ingress` traffic is sent to as is (ipMode VIP or
    unset): nodes forward them to the Service, as kube-proxy does."""
    out = []
    for ing in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []:
        if isinstance(ing, dict) and ing.get("ip") and (ing.get("ipMode") or "VIP") == "VIP":
            out.append(str(ing["ip"]))
    return out


def source_ranges(svc: dict) -> list[str] | None:
    """The networks a LoadBalancer Service accepts clients from (spec.loadBalancerSourceRanges,
    else the annotation), normalised ("10.0.0.1/8" -> "10.0.0.0/8"); [] when unrestricted,
    None when one is not a CIDR."""
    ranges = (svc.get("spec") or {}).get("loadBalancerSourceRanges") or []
    if not ranges:
        note = ((svc.get("metadata") or {}).get("annotations") or {}).get(
            SOURCE_RANGES_ANNOTATION) or ""
        ranges = [r for r in note.split(",") if r.strip()]
    out = []
    for r in ranges:
        if "/" not in str(r):
            return None  # a CIDR, as Go's net.ParseCIDR wants it
        try:
            out.append(str(ipaddress.ip_network(str(r).strip(), strict=False)))
        except ValueError:
            return None
    return out
