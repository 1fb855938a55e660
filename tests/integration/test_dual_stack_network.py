"""Dual-stack pod networking for real: a server started with an IPv4 and an IPv6 cluster and
service CIDR, two agents in network namespaces joined by a link with both families (each
agent's --node-ip "v4,v6"), real podman pods.

- each Node has an IPv4 and an IPv6 pod CIDR; pods list both IPs in status.podIPs, in their
  node's CIDRs, and each agent routes the other's IPv6 pod CIDR via its IPv6 node IP;
- a pod reaches a pod on the other node by its IPv6 address, and a RequireDualStack
  Service's IPv6 ClusterIP reaches endpoints on both nodes (the ip6 service table);
- the node's cluster DNS (dig from the node's namespace) answers AAAA with the Service's IPv6
  ClusterIP, a headless Service's pods' IPv6 addresses, and a pod's dashed IPv6 name, while
  A stays IPv4;
- a NetworkPolicy isolating the web pods refuses the client's IPv6 connections to them, on
  the other node (routed) and on its own (bridged), as it does IPv4.

Needs root (`ip netns`), podman and nft; skipped with the reason otherwise."""

from __future__ import annotations

import ipaddress
import json
import shutil
import time

import pytest

from tests.integration.test_pod_network import fetch_from, web_pod
from tests.integration.twonodes import Agent, Cluster, two_agent_cluster

pytestmark = [pytest.mark.integration]

CLUSTER_CIDR = "10.62.0.0/16,fd62::/56"
SERVICE_CIDR = "10.63.0.0/16,fd63::/112"
DNS_IP = "10.63.0.10"  # the 10th address of the primary service CIDR
PORT = 8080


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    if shutil.which("nft") is None or shutil.which("dig") is None:
        pytest.skip("nft and dig are needed")
    with two_agent_cluster(tmp_path_factory.mktemp("dual"), {}, link=True, dual_stack=True,
                           server_args=("--cluster-cidr", CLUSTER_CIDR,
                                        "--service-cidr", SERVICE_CIDR)) as c:
        yield c


def _pod_cidrs(c: Cluster, ag: Agent) -> list[str]:
    return c.srv.kubectl_json("get", "node", ag.name).get("spec", {}).get("podCIDRs") or []


def _ips_in(c: Cluster, pod: str, cidrs: list[str]) -> list[str] | None:
    p = c.running(pod)
    ips = [x["ip"] for x in (p or {}).get("status", {}).get("podIPs") or []]
    ok = len(ips) == 2 and all(ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)
                               for ip, cidr in zip(ips, cidrs, strict=True))
    return ips if ok else None


def _dig(ag: Agent, qtype: str, name: str) -> list[str]:
    out = ag.ns.run(["dig", "+short", "+time=2", "+tries=1", f"@{DNS_IP}", qtype, name])
    return sorted(out.stdout.split())


def test_pods_services_and_dns_in_both_families(dual: Cluster):
    c, a, b = dual, dual.a, dual.b
    assert b is not None
    cidrs = {ag.name: c.wait(lambda ag=ag: len(_pod_cidrs(c, ag)) == 2 and _pod_cidrs(c, ag),
                             20, f"{ag.name} pod CIDRs") for ag in (a, b)}
    assert all(":" in v[1] and v[1].endswith("/64") for v in cidrs.values()), cidrs
    web_pod(c, "web-a", a.name, {"app": "web"})
    web_pod(c, "web-b", b.name, {"app": "web"})
    web_pod(c, "client", a.name, {"role": "client"})
    ips = {p: c.wait(lambda p=p, n=n: _ips_in(c, p, cidrs[n]), 90,
                     f"{p} Running with an IP of each family")
           for p, n in (("web-a", a.name), ("web-b", b.name), ("client", a.name))}

    # host-gw for IPv6: the other node's IPv6 pod CIDR via its IPv6 node IP, pod to pod
    b_v6 = next(x["address"] for x in c.srv.kubectl_json("get", "node", b.name)["status"][
        "addresses"] if x["type"] == "InternalIP" and ":" in x["address"])
    c.wait(lambda: f"{cidrs[b.name][1]} via {b_v6}" in a.ns.run(
        ["ip", "-6", "route", "show", "proto", "201"]).stdout, 20, "IPv6 route to b's pods")
    assert fetch_from(c, "client", ips["web-b"][1], PORT) == ["web-b"], c.logs()

    # a dual-stack Service: its IPv6 ClusterIP reaches the endpoints on both nodes
    c.srv.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ipFamilyPolicy": "RequireDualStack", "selector": {"app": "web"},
                 "ports": [{"port": 80, "targetPort": PORT}]}}))
    svc = c.srv.kubectl_json("get", "svc", "web")["spec"]
    v4_ip, v6_ip = svc["clusterIPs"]
    assert svc["ipFamilies"] == ["IPv4", "IPv6"] and ":" in v6_ip
    table = next(line.split()[-1] for line in a.ns.run(["nft", "list", "tables"]).stdout
                 .splitlines() if line.startswith("table ip6 k3py-proxy"))
    c.wait(lambda: all(ips[p][1] in a.ns.run(["nft", "list", "table", "ip6", table]).stdout
                       for p in ("web-a", "web-b")), 20, "both IPv6 endpoints in a's ip6 table")
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while seen != {"web-a", "web-b"}:
        assert time.monotonic() < deadline, f"only {seen} answered on [{v6_ip}]\n{c.logs()}"
        seen.update(x for x in fetch_from(c, "client", v6_ip, 80, 6) if x)
    assert fetch_from(c, "client", v4_ip, 80) in (["web-a"], ["web-b"])  # IPv4 as before

    # cluster DNS: AAAA next to A, headless Services and pods by their dashed IPv6 name
    c.srv.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-hl"},
        "spec": {"clusterIP": "None", "ipFamilyPolicy": "RequireDualStack",
                 "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": PORT}]}}))
    name = "web.default.svc.cluster.local"
    c.wait(lambda: _dig(a, "AAAA", name) == [v6_ip], 20, "AAAA of the Service")
    assert _dig(a, "A", name) == [v4_ip]
    want = sorted(ips[p][1] for p in ("web-a", "web-b"))
    c.wait(lambda: _dig(a, "AAAA", "web-hl.default.svc.cluster.local") == want, 20,
           "AAAA of the headless Service's pods")
    dashed = ips["web-b"][1].replace(":", "-")
    assert _dig(a, "AAAA", f"{dashed}.default.pod.cluster.local") == [ips["web-b"][1]]

    # a NetworkPolicy holds for IPv6 as for IPv4: the web pods isolated, the client refused
    assert fetch_from(c, "client", ips["web-a"][1], PORT) == ["web-a"]  # (open before it)
    c.srv.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny-web"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}}))
    c.wait(lambda: fetch_from(c, "client", ips["web-b"][1], PORT) == [""], 20,
           "IPv6 to web-b (other node) refused")
    assert fetch_from(c, "client", ips["web-a"][1], PORT) == [""]  # same node, bridged
    assert fetch_from(c, "client", ips["web-a"][0], PORT) == [""]
