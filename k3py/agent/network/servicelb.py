"""The node's side of ServiceLB: which LoadBalancer ports something on this node already listens
on (a process bound to the node IP or to every address), so that the node does not take them
over; the agent reports them on its Node (PORTS_IN_USE_ANNOTATION) and the server's
ServiceLBController leaves the node out of those Services, with an Event.

A port is probed by binding it on the node IP for a moment: the kernel refuses when a listener
holds it (TCP, with SO_REUSEADDR so that connections in TIME_WAIT do not count) or a socket is
bound to it (UDP). The service rules (DNAT) hold no socket, so they never count."""

from __future__ import annotations

import errno
import socket

from k3py.agent.network.proxy import ServicePort
from k3py.api.servicelb import lb_ports, wants_load_balancer

__all__ = ["ports_in_use", "leave_out_taken"]

_SOCK_TYPES = {"TCP": socket.SOCK_STREAM, "UDP": socket.SOCK_DGRAM}


def ports_in_use(services: list[dict], node_ip: str) -> set[tuple[str, int]]:
    """(protocol, port) of ServiceLB's Services that are taken on `node_ip`."""
    wanted = {p for svc in services if wants_load_balancer(svc) for p in lb_ports(svc)}
    return {p for p in wanted if _taken(node_ip, *p)}


def _taken(ip: str, protocol: str, port: int) -> bool:
    kind = _SOCK_TYPES.get(protocol)
    if kind is None or not ip:
        return False  # SCTP: not probed
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, kind) as s:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def leave_out_taken(ports: list[ServicePort], node_ip: str,
                    taken: set[tuple[str, int]]) -> None:
    """Drop this node's own address from the LoadBalancer addresses of taken ports (until the
    server has left the node out, the listener keeps its port)."""
    names = {"tcp": "TCP", "udp": "UDP", "sctp": "SCTP"}
    for sp in ports:
        if node_ip in sp.lb_ips and (names[sp.protocol], sp.port) in taken:
            sp.lb_ips = [ip for ip in sp.lb_ips if ip != node_ip]
