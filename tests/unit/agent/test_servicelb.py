"""The node's ServiceLB port check (k3py/agent/network/servicelb.py) with real sockets: a
LoadBalancer port something listens on is taken, a free one, another address's listener or a
Service of another loadBalancerClass is not; a taken port keeps this node's own address out
of the rules and the other nodes' addresses in."""

from __future__ import annotations

import socket

import pytest

from k3py.agent.network import proxy
from k3py.agent.network.servicelb import leave_out_taken, ports_in_use

pytestmark = pytest.mark.unit


def _lb(name: str, port: int, protocol: str = "TCP", **spec) -> dict:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.50",
                     "ports": [{"port": port, "protocol": protocol}], **spec},
            "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1", "ipMode": "VIP"},
                                                    {"ip": "10.0.0.9"}]}}}


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_listeners_take_their_ports_and_nothing_else_does():
    tcp = socket.socket()
    tcp.bind(("0.0.0.0", 0))
    tcp.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    other = socket.socket()  # listens on another address than the node's: not in the way
    other.bind(("127.0.0.2", 0))
    other.listen()
    try:
        tcp_port, udp_port = tcp.getsockname()[1], udp.getsockname()[1]
        free = _free_port(socket.SOCK_STREAM)
        services = [_lb("a", tcp_port), _lb("b", udp_port, "UDP"), _lb("c", free),
                    _lb("d", other.getsockname()[1]),
                    _lb("e", udp_port, "UDP", loadBalancerClass="example.com/lb"),
                    {**_lb("f", tcp_port), "spec": {"type": "NodePort",
                                                    "ports": [{"port": tcp_port + 1}]}}]
        assert ports_in_use(services, "127.0.0.1") == {("TCP", tcp_port), ("UDP", udp_port)}
    finally:
        for s in (tcp, udp, other):
            s.close()


def test_a_taken_port_drops_only_this_nodes_address():
    svc = _lb("a", 8443)
    ports = proxy.service_ports([svc], [], "n1")
    assert ports[0].lb_ips == ["127.0.0.1", "10.0.0.9"]
    leave_out_taken(ports, "127.0.0.1", {("TCP", 8443)})
    assert ports[0].lb_ips == ["10.0.0.9"]
    leave_out_taken(ports, "10.0.0.9", {("TCP", 9999)})
    assert ports[0].lb_ips == ["10.0.0.9"]
    script = proxy.build_ruleset(ports)
    assert "10.0.0.9 . tcp . 8443" in script and "127.0.0.1 . tcp . 8443" not in script
