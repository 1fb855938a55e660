"""The tunnel path to nodes this node cannot route to: which endpoints go through it (the
service rules), where a connection the rules sent to the tunnel proxy goes, which node the
server relays a pod IP to, and loadBalancerSourceRanges in the rules."""

from __future__ import annotations

import ipaddress

import pytest

from k3py.agent.network.proxy import Endpoint, ServicePort, build_ruleset, mark_tunnelled
from k3py.agent.network.tunnelproxy import ClientAffinity, tunnel_target
from k3py.server.edge.noderelay import node_for_ip
from k3py.tunnel.protocol import ConnectRequest

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
