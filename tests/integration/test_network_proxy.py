"""The node's service rules (k3py/agent/network/proxy.py) loaded with the real `nft` into a
network namespace, with real TCP and UDP traffic: two endpoint addresses on the loopback
run an echo server that answers with the address it was reached on; a client in the namespace
(the node itself) connects to the ClusterIP, and the host connects to the node port.

Proves: a ClusterIP reaches every ready endpoint, TCP and UDP, named target ports; a node port
on the node's address; sessionAffinity ClientIP sticks; an endpoint removed from the slice
gets no more traffic after the next load; a port with no endpoint is refused at once
(ICMP port unreachable, so connect() fails fast, not a timeout); reloading replaces the table
whole; deleting it stops service routing; a UDP flow to a removed endpoint moves to another
once its conntrack entries are flushed (conntrack.py); a LoadBalancer's ingress address
(ServiceLB: the node's IP) forwards the Service's port from the host."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import textwrap

import pytest

from k3py.agent.network import proxy
from k3py.agent.network.conntrack import Conntrack, stale_entries
from tests.harness import wait_for
from tests.integration.netns import netns_factory  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

EPS = ("10.42.0.5", "10.42.0.6")
CLUSTER_IP, UDP_IP, EMPTY_IP, LB_IP = "10.43.0.20", "10.43.0.21", "10.43.0.22", "10.43.0.23"
LB_PORT = 8081
NODE_PORT = 30080

_ECHO = textwrap.dedent("""
    import socket, sys, threading
    def tcp(addr):
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, 8080)); s.listen(64)
        while True:
            c, _ = s.accept(); c.sendall(addr.encode()); c.close()
    def udp(addr):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addr, 5353))
        while True:
            _, peer = s.recvfrom(512); s.sendto(addr.encode(), peer)
    for a in sys.argv[1:]:
        threading.Thread(target=tcp, args=(a,), daemon=True).start()
        threading.Thread(target=udp, args=(a,), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()
""")

_CLIENT = textwrap.dedent("""
    import json, socket, sys
    host, port, proto, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    out = []
    for _ in range(n):
        try:
            if proto == "udp":
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
                s.sendto(b"?", (host, port)); out.append(s.recv(64).decode())
            else:
                s = socket.create_connection((host, port), timeout=2)
                out.append(s.recv(64).decode())
            s.close()
        except ConnectionRefusedError:
            out.append("refused")
        except OSError as e:
            out.append(type(e).__name__)
    print(json.dumps(out))
""")


def _service(name, ip, port, proto="TCP", **spec):
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"name": "p", "port": port, "protocol": proto,
                                "targetPort": "named", **spec.pop("port_extra", {})}],
                     **spec}}


def _slice(svc, eps, port, proto="TCP"):
    return {"metadata": {"name": f"{svc}-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": "p", "port": port, "protocol": proto}],
            "endpoints": [{"addresses": [ip], "nodeName": "n1",
                           "conditions": {"ready": True}} for ip in eps]}


class Node:
    def __init__(self, ns) -> None:
        self.ns = ns

    def load(self, services, slices) -> None:
        script = proxy.build_ruleset(proxy.service_ports(services, slices, "n1"),
                                     pod_cidrs=("10.42.0.0/16",))
        asyncio.run(proxy.apply(script, netns=self.ns.name))

    def client(self, host, port, proto="tcp", n=1) -> list[str]:
        out = self.ns.run([sys.executable, "-c", _CLIENT, host, str(port), proto, str(n)],
                          timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


_UDP_FROM_PORT = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("", int(sys.argv[3])))
    s.sendto(b"?", (sys.argv[1], int(sys.argv[2]))); print(s.recv(64).decode())
""")


@pytest.fixture
def node(netns_factory):  # noqa: F811 - the fixture imported above
    ns = netns_factory()
    for cmd in (*(["addr", "add", f"{ip}/32", "dev", "lo"] for ip in EPS),
                ["route", "add", "default", "via", ns.host_ip]):
        out = ns.run(["ip", *cmd])
        assert out.returncode == 0, (cmd, out.stderr)
    echo = ns.popen([sys.executable, "-c", _ECHO, *EPS], stdout=-1, text=True)
    assert echo.stdout.readline().strip() == "ready"
    return Node(ns)


def test_cluster_ip_node_port_udp_affinity_and_removal(node):
    services = [_service("web", CLUSTER_IP, 80, type="NodePort",
                         port_extra={"nodePort": NODE_PORT}),
                _service("dns", UDP_IP, 53, proto="UDP"),
                _service("empty", EMPTY_IP, 80),
                {**_service("lb", LB_IP, LB_PORT, type="LoadBalancer",
                            port_extra={"nodePort": NODE_PORT + 1}),
                 "status": {"loadBalancer": {"ingress": [{"ip": node.ns.ns_ip,
                                                          "ipMode": "VIP"}]}}}]
    slices = [_slice("web", EPS, 8080), _slice("dns", EPS, 5353, "UDP"),
              _slice("lb", EPS, 8080)]
    node.load(services, slices)

    got = node.client(CLUSTER_IP, 80, n=40)
    assert set(got) == set(EPS), got  # random over both (chance of missing one: 2^-39)
    assert set(node.client(UDP_IP, 53, "udp", n=20)) <= set(EPS)
    assert node.client(EMPTY_IP, 80) == ["refused"]
    assert node.client("10.43.0.99", 80) == ["TimeoutError"]  # not a service: no rule at all

    # the node port, from the host to the node's address
    def from_host(port: int = NODE_PORT) -> str:
        with socket.create_connection((node.ns.ns_ip, port), timeout=3) as s:
            return s.recv(64).decode()
    assert {from_host() for _ in range(20)} <= set(EPS)
    assert {from_host(LB_PORT) for _ in range(10)} <= set(EPS)  # the LoadBalancer's port

    # one endpoint goes: the next load routes to the other only
    node.load(services, [_slice("web", EPS[:1], 8080), *slices[1:]])
    assert set(node.client(CLUSTER_IP, 80, n=20)) == {EPS[0]}

    # ClientIP affinity: one client address always gets the same endpoint
    services[0]["spec"]["sessionAffinity"] = "ClientIP"
    node.load(services, slices)
    assert len(set(node.client(CLUSTER_IP, 80, n=20))) == 1

    asyncio.run(proxy.delete(netns=node.ns.name))
    assert node.client(CLUSTER_IP, 80) == ["TimeoutError"]
    wait_for(lambda: "k3py-proxy" not in node.ns.run(["nft", "list", "tables"]).stdout,
             timeout=5, what="table deleted")


def test_udp_flow_of_a_removed_endpoint_is_flushed(node):
    """A UDP flow (one client port) stays with the endpoint its conntrack entry names, also
    after the rules drop that endpoint; the flush moves it to the one left."""
    services = [_service("dns", UDP_IP, 53, proto="UDP")]

    def ask() -> str:
        out = node.ns.run([sys.executable, "-c", _UDP_FROM_PORT, UDP_IP, "53", "40053"])
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()
    both = [_slice("dns", EPS, 5353, "UDP")]
    node.load(services, both)
    first = ask()
    left = [ip for ip in EPS if ip != first]
    node.load(services, [_slice("dns", left, 5353, "UDP")])
    assert ask() == first  # the kernel keeps the flow on its endpoint
    stale = stale_entries(proxy.service_ports(services, both, "n1"), proxy.service_ports(
        services, [_slice("dns", left, 5353, "UDP")], "n1"))
    assert stale == [(UDP_IP, 53, first)]
    asyncio.run(Conntrack(netns=node.ns.name).flush(stale))
    assert ask() == left[0]


def test_a_bad_ruleset_is_refused_whole_and_the_old_one_stays(node):
    services = [_service("web", CLUSTER_IP, 80)]
    node.load(services, [_slice("web", EPS, 8080)])
    bad = proxy.build_ruleset([]).replace("type nat hook output", "type nat hook nowhere")
    with pytest.raises(proxy.NftError, match="nowhere"):
        asyncio.run(proxy.apply(bad, netns=node.ns.name))
    assert set(node.client(CLUSTER_IP, 80, n=10)) <= set(EPS)
