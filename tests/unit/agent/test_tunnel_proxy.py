"""The tunnel path to nodes this node cannot route to: which endpoints go through it (the
service rules), where a connection the rules sent to the tunnel proxy goes, which node the
server relays a pod IP to, sessionAffinity ClientIP, UDP Services (a socket per port, a flow
per client over its own udp connect stream, the oldest ended past the cap), and
loadBalancerSourceRanges in the rules."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest

from k3py.agent.network import tunnelproxy
from k3py.agent.network.proxy import Endpoint, ServicePort, build_ruleset, mark_tunnelled
from k3py.agent.network.tunnelproxy import ClientAffinity, TunnelProxy, tunnel_target
from k3py.server.edge.noderelay import node_for_ip
from k3py.tunnel.message import Message
from k3py.tunnel.protocol import (
    FEATURES,
    FRAME_DATA,
    ConnectRequest,
    content_data,
    data_content,
)

pytestmark = pytest.mark.unit

PROXY = "10.43.0.10:41000"
FAR = "10.42.1.0/24"  # the pod CIDR of a node without a route


def _port(proto: str, *eps: str, **kw) -> ServicePort:
    sp = ServicePort("default", "web", "", proto, 80, ["10.43.0.20"], **kw)
    sp.endpoints = [Endpoint(ip, 8080, ip.startswith("10.42.0.")) for ip in eps]
    mark_tunnelled([sp], [FAR])
    return sp


def _rules(*ports: ServicePort) -> str:
    return build_ruleset(list(ports), pod_cidrs=("10.42.0.0/24", FAR),
                         own_pod_cidr="10.42.0.0/24", tunnel_cidrs=(FAR,), tunnel_proxy=PROXY)


def test_tcp_to_tunnelled_pods_goes_to_the_proxy_and_only_it_may_be_reached_so():
    script = _rules(_port("tcp", "10.42.1.5"))
    assert f"ip daddr @tunnel-cidrs meta l4proto tcp dnat to {PROXY}" in script
    assert f"meta l4proto tcp dnat to {PROXY}" in script.split("chain svc-")[2]
    assert "ip daddr 10.43.0.10 tcp dport 41000 ct status & dnat == 0 drop" in script
    assert f"elements = {{ {FAR} }}" in script.split("set tunnel-cidrs")[1]


def test_routable_endpoints_are_preferred_and_udp_is_not_tunnelled():
    both = _rules(_port("tcp", "10.42.0.7", "10.42.1.5"))
    assert "dnat to 10.42.0.7:8080" in both and "dnat to 10.42.1.5" not in both
    assert f"dnat to {PROXY}" not in both.split("chain svc-", 1)[1]
    udp = _rules(_port("udp", "10.42.1.5"))
    assert "10.43.0.20 . udp . 80" in udp.split("set no-endpoint-services")[1].split("}")[0]


def test_no_tunnel_without_a_proxy():
    script = build_ruleset([_port("tcp", "10.42.1.5")], tunnel_cidrs=(FAR,))
    assert "dnat to" not in script and "tunnel-cidrs {\n    type ipv4_addr\n    flags " \
        "interval\n    auto-merge\n  }" in script


def test_the_proxy_sends_a_connection_to_the_pod_or_a_tunnelled_endpoint():
    far = [ipaddress.IPv4Network(FAR)]
    svc = _port("tcp", "10.42.1.5", "10.42.1.6", node_port=30080, lb_ips=["192.168.1.5"])
    first = lambda sp, eps: eps[0]  # noqa: E731
    assert tunnel_target("10.42.1.9", 9000, [svc], far, first) == ("10.42.1.9", 9000)
    assert tunnel_target("10.43.0.20", 80, [svc], far, first) == ("10.42.1.5", 8080)
    assert tunnel_target("192.168.1.5", 80, [svc], far, lambda sp, eps: eps[1]) == \
        ("10.42.1.6", 8080)
    assert tunnel_target("192.168.1.10", 30080, [svc], far, first) == ("10.42.1.5", 8080)
    assert tunnel_target("10.43.0.20", 81, [svc], far, first) is None
    local = _port("tcp", "10.42.1.5", internal_local=True)
    assert tunnel_target("10.43.0.20", 80, [local], far, first) is None


def test_client_ip_affinity_keeps_a_client_on_its_endpoint_until_the_timeout():
    now, chosen = [0.0], []

    def choose(eps):  # the next endpoint in turn, counted
        chosen.append(1)
        return eps[len(chosen) % len(eps)]
    affinity = ClientAffinity(clock=lambda: now[0], choose=choose)
    sticky = _port("tcp", "10.42.1.5", "10.42.1.6", affinity_seconds=60)
    eps = sticky.endpoints
    assert affinity.pick(sticky, "10.42.0.9", eps).ip == "10.42.1.6"
    assert affinity.pick(sticky, "10.42.0.8", eps).ip == "10.42.1.5"  # another client
    now[0] = 59  # each connection starts the timeout again
    assert affinity.pick(sticky, "10.42.0.9", eps).ip == "10.42.1.6"
    now[0] = 118
    assert affinity.pick(sticky, "10.42.0.9", eps).ip == "10.42.1.6"
    assert len(chosen) == 2
    now[0] = 178  # timed out: chosen again
    affinity.pick(sticky, "10.42.0.9", eps)
    assert len(chosen) == 3
    # its endpoint gone: another, remembered from now on
    assert affinity.pick(sticky, "10.42.0.8", eps[1:]).ip == "10.42.1.6"
    assert affinity.pick(sticky, "10.42.0.8", eps).ip == "10.42.1.6"
    plain = _port("tcp", "10.42.1.5", "10.42.1.6")  # no affinity: chosen every time
    picks = {affinity.pick(plain, "10.42.0.9", plain.endpoints).ip for _ in range(4)}
    assert picks == {"10.42.1.5", "10.42.1.6"}


def test_client_ip_affinity_forgets_expired_clients_as_the_table_grows():
    now = [0.0]
    affinity = ClientAffinity(clock=lambda: now[0], choose=lambda eps: eps[0])
    sticky = _port("tcp", "10.42.1.5", affinity_seconds=10)
    for i in range(3000):
        now[0] = i / 100  # 30 s of clients, each remembered for 10 s
        affinity.pick(sticky, f"10.1.{i // 250}.{i % 250}", sticky.endpoints)
    assert len(affinity) < 2048


def test_the_server_relays_to_the_node_whose_pod_cidr_holds_the_address():
    nodes = [{"metadata": {"name": "a"}, "spec": {"podCIDR": "10.42.0.0/24"}},
             {"metadata": {"name": "b"}, "spec": {"podCIDRs": ["10.42.1.0/24", "fd00::/64"]}},
             {"metadata": {"name": "c"}, "spec": {}}]
    assert node_for_ip(nodes, "10.42.1.200") == "b"
    assert node_for_ip(nodes, "10.42.0.3") == "a"
    assert node_for_ip(nodes, "10.42.9.3") == ""


@pytest.mark.parametrize("content", [{"ip": "10.42.1.5"}, {"ip": "10.42.1.5", "port": 70000},
                                     {"ip": "fd00::1", "port": 80}, {"ip": "web", "port": 80},
                                     {"ip": "10.42.1.5", "port": 80, "protocol": "sctp"},
                                     None])
def test_a_connect_request_needs_an_ipv4_address_and_a_port(content):
    with pytest.raises(ValueError):
        ConnectRequest.from_content(content)


def test_a_connect_request_is_tcp_unless_it_says_udp():
    assert ConnectRequest.from_content({"ip": "10.42.1.5", "port": 53}).protocol == "tcp"
    udp = ConnectRequest("10.42.1.5", 53, "udp")
    assert ConnectRequest.from_content(udp.to_content()) == udp


def test_udp_to_tunnelled_endpoints_goes_to_the_ports_own_socket():
    sp = _port("udp", "10.42.1.5")
    udp = "10.43.0.10:41001"
    script = build_ruleset([sp], pod_cidrs=("10.42.0.0/24", FAR), own_pod_cidr="10.42.0.0/24",
                           tunnel_cidrs=(FAR,), tunnel_proxy=PROXY, udp_proxies={sp.id: udp})
    assert f"meta l4proto udp dnat to {udp}" in script.split("chain svc-")[2]
    assert "ip daddr 10.43.0.10 udp dport 41001 ct status & dnat == 0 drop" in script
    assert "10.43.0.20 . udp . 80" not in script.split("set no-endpoint-services")[1].split("}")[0]


def test_load_balancer_source_ranges_drop_other_clients_of_the_lb_address():
    sp = ServicePort("default", "web", "", "tcp", 80, ["10.43.0.20"], node_port=30080,
                     lb_ips=["192.168.1.5"], source_ranges=["10.0.0.0/8", "192.168.2.0/24"])
    sp.endpoints = [Endpoint("10.42.0.7", 8080, True)]
    script = build_ruleset([sp])
    assert f"192.168.1.5 . tcp . 80 : goto fw-{sp.id}" in script
    assert f"ip saddr {{ 10.0.0.0/8, 192.168.2.0/24 }} goto ext-{sp.id}\n    drop" in script
    assert f"tcp . 30080 : goto ext-{sp.id}" in script  # node ports: not restricted (upstream)


class Hub:
    """Stands in for EdgeHub: the streams this node opens, and the frames sent on them."""

    connects = 1

    def __init__(self, server_features: frozenset[str] = FEATURES) -> None:
        self.opened: dict[str, tuple[ConnectRequest, asyncio.Queue]] = {}
        self.closed: list[str] = []
        self.sent: list[Message] = []
        self.server_features = server_features

    def speaks(self, feature: str) -> bool:
        return feature in self.server_features

    def open_stream(self, operation: str, content: dict):
        sid = f"s{len(self.opened)}"
        self.opened[sid] = ConnectRequest.from_content(content), asyncio.Queue()
        return sid, self.opened[sid][1]

    def close_stream(self, sid: str) -> None:
        self.closed.append(sid)

    def send_live(self, msg: Message) -> bool:
        self.sent.append(msg)
        return True


async def _until(pred, what: str) -> None:
    for _ in range(500):
        if pred():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _client() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


async def test_each_client_is_a_flow_to_a_tunnelled_endpoint_and_gets_its_answers(monkeypatch):
    monkeypatch.setattr(tunnelproxy, "UDP_FLOWS", 2)
    hub = Hub()
    proxy = TunnelProxy(hub)  # type: ignore[arg-type]
    sp = _port("udp", "10.42.0.7", "10.42.1.5")  # one local endpoint, one tunnelled
    proxy.update([sp], ["10.42.1.0/24"])
    proxy.address = "127.0.0.1:1"  # as if listening there
    ports = await proxy.serve_udp()
    ip, _, port = ports[sp.id].rpartition(":")
    clients = [_client() for _ in range(3)]
    try:
        clients[0].sendto(b"q1", (ip, int(port)))
        clients[0].sendto(b"q2", (ip, int(port)))
        await _until(lambda: len([m for m in hub.sent if m.route.operation == FRAME_DATA]) == 2,
                     "both datagrams up one stream")
        [(sid, (req, inputs))] = hub.opened.items()
        assert req == ConnectRequest("10.42.1.5", 8080, "udp", flow=True)
        assert [content_data(m.content) for m in hub.sent] == [b"q1", b"q2"]
        assert {m.header.parent_id for m in hub.sent} == {sid}
        inputs.put_nowait((FRAME_DATA, data_content(b"a1")))
        assert await asyncio.to_thread(clients[0].recv, 100) == b"a1"
        for n, c in enumerate(clients[1:], 2):  # two more clients: past the cap, the first ends
            c.sendto(b"q", (ip, int(port)))
            await _until(lambda n=n: len(hub.opened) == n, "a new flow")
        await _until(lambda: hub.closed == [sid], "the oldest flow closed")
        assert await proxy.serve_udp() == ports  # still wanted: the same socket
        sp.endpoints = sp.endpoints[:1]  # no tunnelled endpoint any more
        assert await proxy.serve_udp() == {}
    finally:
        for c in clients:
            c.close()
        await proxy.stop()


async def test_no_udp_flow_through_a_server_older_than_udp_relaying(caplog):
    # an older server would pass the request on as a TCP connect: nothing is opened, and the
    # agent says why, once per link
    hub = Hub(server_features=frozenset())
    proxy = TunnelProxy(hub)  # type: ignore[arg-type]
    sp = _port("udp", "10.42.1.5")
    proxy.update([sp], ["10.42.1.0/24"])
    proxy.address = "127.0.0.1:1"
    ports = await proxy.serve_udp()
    ip, _, port = ports[sp.id].rpartition(":")
    client = _client()
    try:
        for q in (b"q1", b"q2"):
            client.sendto(q, (ip, int(port)))
        await _until(lambda: "older than UDP relaying" in caplog.text, "the refusal logged")
        await asyncio.sleep(0.05)
        assert hub.opened == {} and hub.sent == []
        assert caplog.text.count("older than UDP relaying") == 1
    finally:
        client.close()
        await proxy.stop()
