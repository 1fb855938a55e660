"""The pure parts of the pod network: which routes a node wants to the other nodes' pod CIDRs
(host-gw: only via a node IP on one of its own subnets) and how they change, the Node view
that goes down the tunnel, the UDP conntrack entries a rule change makes stale, and the
podman network's name and gateway."""

from __future__ import annotations

import ipaddress

import pytest

from k3py.agent.network.conntrack import stale_entries
from k3py.agent.network.podnet import gateway_of, network_name
from k3py.agent.network.proxy import Endpoint, ServicePort, build_ruleset, service_ports
from k3py.agent.network.routes import (
    desired_routes,
    local_networks,
    pod_cidrs,
    route_changes,
    tunnelled_cidrs,
)
from k3py.server.edge.downstream import node_route_view
from tests.unit.agent.test_network_policy import _nft_check

pytestmark = pytest.mark.unit


def node(name: str, ip: str | None, *cidrs: str) -> dict:
    out: dict = {"metadata": {"name": name}, "spec": {}, "status": {"addresses": []}}
    if cidrs:
        out["spec"] = {"podCIDR": cidrs[0], "podCIDRs": list(cidrs)}
    if ip:
        out["status"]["addresses"] = [{"type": "Hostname", "address": name},
                                      {"type": "InternalIP", "address": ip}]
    return out


LOCAL = [ipaddress.IPv4Interface("192.168.1.10/24"), ipaddress.IPv4Interface("10.9.0.2/30")]


def test_routes_go_via_node_ips_on_our_own_subnets_only():
    nodes = [node("me", "192.168.1.10", "10.42.0.0/24"),
             node("b", "192.168.1.11", "10.42.1.0/24", "fd42::/64"),
             node("c", "10.9.0.1", "10.42.2.0/24"),
             node("behind-nat", "172.16.5.5", "10.42.3.0/24"),  # not on our link
             node("no-cidr", "192.168.1.12"),
             node("no-ip", None, "10.42.4.0/24")]
    assert desired_routes(nodes, "me", LOCAL) == {"10.42.1.0/24": "192.168.1.11",
                                                  "10.42.2.0/24": "10.9.0.1"}


def test_route_changes_add_replace_and_remove():
    current = {"10.42.1.0/24": "192.168.1.11", "10.42.2.0/24": "10.9.0.1",
               "10.42.5.0/24": "192.168.1.15"}
    desired = {"10.42.1.0/24": "192.168.1.11", "10.42.2.0/24": "192.168.1.20",
               "10.42.6.0/24": "192.168.1.16"}
    put, gone = route_changes(current, desired)
    assert put == {"10.42.2.0/24": "192.168.1.20", "10.42.6.0/24": "192.168.1.16"}
    assert gone == ["10.42.5.0/24"]
    assert route_changes(desired, desired) == ({}, [])


def test_local_networks_from_ip_json_skip_loopback_and_links_down():
    doc = [{"ifname": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"],
            "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
           {"ifname": "eth0", "flags": ["UP", "LOWER_UP"],
            "addr_info": [{"family": "inet", "local": "192.168.1.10", "prefixlen": 24},
                          {"family": "inet6", "local": "fe80::1", "prefixlen": 64}]},
           {"ifname": "eth1", "flags": ["NO-CARRIER", "UP"],  # its cable (or peer) is gone
            "addr_info": [{"family": "inet", "local": "10.0.0.1", "prefixlen": 30}]},
           {"ifname": "eth2", "flags": [],  # set down
            "addr_info": [{"family": "inet", "local": "10.0.1.1", "prefixlen": 30}]}]
    assert local_networks(doc) == [ipaddress.IPv4Interface("192.168.1.10/24")]


def test_nodes_without_a_route_are_tunnelled():
    nodes = [node("a", "192.168.1.10", "10.42.0.0/24"), node("b", "192.168.1.11", "10.42.1.0/24"),
             node("c", "172.16.0.5", "10.42.2.0/24"), node("d", "", "10.42.3.0/24")]
    routed = desired_routes(nodes, "a", [ipaddress.IPv4Interface("192.168.1.10/24")])
    assert routed == {"10.42.1.0/24": "192.168.1.11"}
    assert tunnelled_cidrs(nodes, "a", routed) == ["10.42.2.0/24", "10.42.3.0/24"]


def test_node_view_going_down_holds_only_what_routes_need():
    full = node("b", "192.168.1.11", "10.42.1.0/24")
    full["metadata"].update(uid="u1", resourceVersion="7", labels={"x": "y"})
    full["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    view = node_route_view(full)
    assert view == {"metadata": {"name": "b", "uid": "u1"},
                    "spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24"]},
                    "status": {"addresses": full["status"]["addresses"]}}
    assert pod_cidrs(view) == ["10.42.1.0/24"]


def _port(proto: str, *eps: str, node_port: int = 0) -> ServicePort:
    sp = ServicePort("default", "dns", "", proto, 53, ["10.43.0.20"], node_port=node_port)
    sp.endpoints = [Endpoint(ip, 5353, False) for ip in eps]
    return sp


def test_conntrack_entries_of_removed_udp_endpoints_are_stale():
    before = [_port("udp", "10.42.0.5", "10.42.1.5", node_port=30053),
              _port("tcp", "10.42.0.5")]
    after = [_port("udp", "10.42.1.5", node_port=30053), _port("tcp")]
    assert stale_entries(before, after) == [("", 30053, "10.42.0.5"),
                                            ("10.43.0.20", 53, "10.42.0.5")]


def test_a_udp_port_that_gets_endpoints_loses_its_rejected_flows():
    assert stale_entries([_port("udp")], [_port("udp", "10.42.1.5")]) == \
        [("10.43.0.20", 53, "")]
    assert stale_entries([_port("udp", "10.42.1.5")], [_port("udp", "10.42.1.5")]) == []


def test_pod_network_name_and_gateway():
    assert network_name("abc123", "pi-1") == "k3py-abc123-pi-1"
    assert gateway_of("10.42.3.0/24") == "10.42.3.1"


def test_ruleset_masquerades_pod_traffic_leaving_the_pod_cidrs():
    script = build_ruleset([_port("tcp", "10.42.1.5")],
                           pod_cidrs=("10.42.0.0/24", "10.42.1.0/24"),
                           own_pod_cidr="10.42.0.0/24")
    assert "elements = { 10.42.0.0/24, 10.42.1.0/24 }" in script
    assert "ip saddr 10.42.0.0/24 ip daddr != @pod-cidrs masquerade" in script
    assert "ip saddr != @pod-cidrs jump mark-for-masquerade" in script
    plain = build_ruleset([_port("tcp", "10.42.1.5")], masquerade_all=True)
    assert "@pod-cidrs" not in plain.split("set pod-cidrs")[1].split("}", 1)[1]


def test_ipv6_pod_cidrs_route_via_the_nodes_ipv6_addresses():
    local = [*LOCAL, ipaddress.IPv6Interface("fd00:9::2/64")]
    b = node("b", "10.9.0.1", "10.42.1.0/24", "fd42:0:0:1::/64")
    b["status"]["addresses"].append({"type": "InternalIP", "address": "fd00:9::1"})
    c = node("c", "10.9.0.1", "10.42.2.0/24", "fd42:0:0:2::/64")  # no IPv6 node address
    assert pod_cidrs(b, 6) == ["fd42:0:0:1::/64"] and pod_cidrs(b) == ["10.42.1.0/24"]
    assert desired_routes([b, c], "a", local) == {
        "10.42.1.0/24": "10.9.0.1", "fd42:0:0:1::/64": "fd00:9::1", "10.42.2.0/24": "10.9.0.1"}
    got = local_networks([{"flags": ["UP", "LOWER_UP"], "addr_info": [
        {"family": "inet6", "local": "fd00:9::2", "prefixlen": 64},
        {"family": "inet6", "local": "fe80::1", "prefixlen": 64}]}])
    assert got == [ipaddress.IPv6Interface("fd00:9::2/64")]


def test_ipv6_service_ports_and_their_ip6_table():
    svc = {"metadata": {"namespace": "default", "name": "web"}, "spec": {
        "type": "LoadBalancer", "clusterIP": "10.43.0.9", "clusterIPs": ["10.43.0.9", "fd43::9"],
        "sessionAffinity": "ClientIP", "loadBalancerSourceRanges": ["10.0.0.0/8", "fd00::/8"],
        "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.10"}, {"ip": "fd00::10"}]}}}

    def es(family: str, ip: str) -> dict:
        return {"metadata": {"namespace": "default", "name": f"web-{family}",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": family, "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}]}
    slices = [es("IPv4", "10.42.0.5"), es("IPv6", "fd42::5")]
    (v4,) = service_ports([svc], slices, "a")
    (v6,) = service_ports([svc], slices, "a", family=6)
    assert (v4.cluster_ips, [e.ip for e in v4.endpoints]) == (["10.43.0.9"], ["10.42.0.5"])
    assert (v6.cluster_ips, [e.ip for e in v6.endpoints]) == (["fd43::9"], ["fd42::5"])
    assert (v6.lb_ips, v6.source_ranges) == (["fd00::10"], ["fd00::/8"])
    empty = ServicePort("default", "none", "", "udp", 53, ["fd43::53"])
    script = build_ruleset([v6, empty], pod_cidrs=("fd42::/64",), own_pod_cidr="fd42::/64",
                           family=6)
    assert script.startswith("table ip6 k3py-proxy {}")
    assert "dnat to [fd42::5]:8080" in script and "ip6 saddr fd42::5 jump" in script
    assert "fd43::53 . udp . 53" in script and "icmpv6 type port-unreachable" in script
    assert "ip daddr" not in script and "ipv4_addr" not in script
    _nft_check(script)
