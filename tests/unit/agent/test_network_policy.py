"""NetworkPolicy rules (k3py/agent/network/policy.py): which pods get chains and what each
allows, and every script accepted by the real `nft -c` (a check: nothing is loaded)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from k3py.agent.metamanager import MetaManager
from k3py.agent.network.manager import NetworkManager
from k3py.agent.network.policy import build_ruleset, ingress_isolated, pod_peers
from k3py.server.edge.downstream import namespace_view, pod_peer_view
from k3py.tunnel.message import GROUP_RESOURCE, OP_DELETE, OP_INSERT, OP_SYNC, new_message
from k3py.tunnel.protocol import POD_PEERS_KIND

pytestmark = pytest.mark.unit

NODE = "n1"


def pod(ns: str, name: str, ip: str, node: str = NODE, ports: list | None = None,
        **labels: str) -> dict:
    return {"metadata": {"namespace": ns, "name": name, "labels": labels, "uid": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports or [],
                                                       "env": [{"name": "X", "value": "s"}]}]},
            "status": {"podIP": ip, "phase": "Running"}}


def ns(name: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": labels}}


def policy(ns_name: str, name: str, selector: dict, types: list[str], **rules) -> dict:
    return {"metadata": {"namespace": ns_name, "name": name},
            "spec": {"podSelector": selector, "policyTypes": types, **rules}}


PODS = [pod("a", "web", "10.42.0.2", ports=[{"name": "http", "containerPort": 8080}],
            app="web"),
        pod("a", "client", "10.42.0.3", app="client"),
        pod("b", "other", "10.42.1.4", node="n2", app="client"),
        pod("b", "host", "192.168.1.9") | {"spec": {"hostNetwork": True, "nodeName": NODE}}]
NAMESPACES = [ns("a", team="x"), ns("b", team="y")]


def rules(policies: list[dict], pods: list[dict] = PODS) -> str:
    views = [pod_peer_view(p) for p in pods]
    script = build_ruleset(policies, [namespace_view(n) for n in NAMESPACES],
                           pod_peers(views), node_name=NODE)
    _nft_check(script)
    return script


def _nft_check(script: str) -> None:
    if shutil.which("nft") is None or os.geteuid() != 0:
        return  # (the pure part is still checked)
    done = subprocess.run(["nft", "-c", "-f", "-"], input=script, capture_output=True,
                          text=True, timeout=20)
    assert done.returncode == 0, done.stderr + script


def chain_of(script: str, direction: str, pod_name: str) -> list[str] | None:
    lines = script.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(f"  chain {direction}-") and pod_name in lines[i + 1]:
            return [ln.strip() for ln in lines[i + 2:lines.index("  }", i)]]
    return None


def test_no_policy_no_chain_and_the_table_still_loads():
    script = rules([])
    assert "chain ingress-" not in script and "ct state established,related accept" in script


def test_default_deny_namespace_selects_only_local_non_host_pods():
    script = rules([policy("a", "deny", {}, ["Ingress", "Egress"])])
    assert chain_of(script, "ingress", "a/web")[-2:] == ["meta l4proto tcp reject with tcp reset",
                                                         "reject"]
    assert chain_of(script, "egress", "a/client") is not None
    assert "10.42.1.4 :" not in script  # another node's pod: checked there
    assert "192.168.1.9" not in script


def test_pod_and_namespace_selectors_and_named_port():
    pol = policy("a", "p", {"matchLabels": {"app": "web"}}, ["Ingress"], ingress=[
        {"from": [{"podSelector": {"matchLabels": {"app": "client"}}},
                  {"namespaceSelector": {"matchLabels": {"team": "y"}},
                   "podSelector": {"matchLabels": {"app": "client"}}}],
         "ports": [{"protocol": "TCP", "port": "http"}, {"protocol": "UDP", "port": 53}]}])
    chain = chain_of(rules([pol]), "ingress", "a/web")
    assert "ip saddr 10.42.0.3 meta l4proto tcp th dport 8080 return" in chain
    assert "ip saddr 10.42.1.4 meta l4proto udp th dport 53 return" in chain
    assert not any("10.42.0.2 " in r for r in chain)
    assert chain_of(rules([pol]), "ingress", "a/client") is None


def test_namespace_selector_matches_the_metadata_name_label():
    pol = policy("a", "p", {}, ["Ingress"], ingress=[{"from": [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "b"}}}]}])
    assert chain_of(rules([pol]), "ingress", "a/web")[0] == "ip saddr 10.42.1.4 return"


def test_ip_block_with_except_and_port_range_egress():
    pol = policy("a", "p", {"matchLabels": {"app": "client"}}, ["Egress"], egress=[
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.42.1.0/24"]}}],
         "ports": [{"protocol": "TCP", "port": 8000, "endPort": 8100}]}])
    chain = chain_of(rules([pol]), "egress", "a/client")
    assert chain[0] == ("ip daddr 10.0.0.0/8 ip daddr != { 10.42.1.0/24 } "
                        "meta l4proto tcp th dport 8000-8100 return")


def test_egress_named_port_resolves_from_each_destination():
    pol = policy("a", "p", {"matchLabels": {"app": "client"}}, ["Egress"], egress=[
        {"ports": [{"protocol": "TCP", "port": "http"}]}])
    chain = chain_of(rules([pol]), "egress", "a/client")
    assert chain[0] == "ip daddr 10.42.0.2 meta l4proto tcp th dport 8080 return"


def test_policies_are_a_union_and_an_empty_from_selects_nothing():
    deny = policy("a", "deny", {}, ["Ingress"])
    none = policy("a", "none", {}, ["Ingress"], ingress=[
        {"from": [{"podSelector": {"matchLabels": {"app": "nobody"}}}]}])
    allow = policy("a", "allow", {}, ["Ingress"], ingress=[{"ports": [{"port": 80}]}])
    assert chain_of(rules([deny, none]), "ingress", "a/web")[0].startswith("meta l4proto tcp rej")
    assert chain_of(rules([deny, none, allow]), "ingress", "a/web")[0] == \
        "meta l4proto tcp th dport 80 return"


def test_peer_view_keeps_only_what_policies_need():
    view = pod_peer_view(PODS[0])
    assert "env" not in str(view)
    assert view["status"] == {"podIP": "10.42.0.2"}  # (Running or Pending: the same)
    assert view["spec"]["containers"] == [{"ports": [{"name": "http", "containerPort": 8080}]}]


def test_two_views_with_one_address_and_overlapping_excepts_still_load():
    pods = [pod("a", "gone", "10.42.0.2"), pod("a", "new", "10.42.0.2")]
    pol = policy("a", "p", {}, ["Ingress"], ingress=[{"from": [{"ipBlock": {
        "cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.1.0.0/16", "10.1.2.0/24"]}}]}])
    script = rules([pol], pods)
    assert chain_of(script, "ingress", "a/gone") is not None
    assert chain_of(script, "ingress", "a/new") is None


def test_the_pods_of_a_peer_are_one_set_per_rule():
    pol = policy("b", "p", {}, ["Egress"], egress=[{"to": [{"podSelector": {}, "namespaceSelector":
                                                            {"matchLabels": {"team": "x"}}}],
                                                     "ports": [{"port": 8080}]}])
    local_b = [*PODS, pod("b", "mine", "10.42.0.9")]
    assert chain_of(rules([pol], local_b), "egress", "b/mine")[0] == \
        "ip daddr { 10.42.0.2, 10.42.0.3 } meta l4proto tcp th dport 8080 return"


def test_the_tunnel_relay_refuses_only_pods_an_ingress_policy_isolates():
    """A relayed connection comes from the node, so it cannot be checked against a pod's
    rules: a pod an Ingress policy selects is not reachable through the tunnel."""
    peers = pod_peers([pod_peer_view(p) for p in PODS])
    web_only = [policy("a", "web", {"matchLabels": {"app": "web"}}, ["Ingress"])]
    egress_only = [policy("a", "out", {}, ["Egress"])]
    assert ingress_isolated(web_only, peers) == {"10.42.0.2"}
    assert ingress_isolated(egress_only, peers) == set()
    assert ingress_isolated(web_only + egress_only, []) == set()  # no pods


async def test_the_relay_check_follows_policy_changes(tmp_path):
    """The node computes the isolated pods once per change of its cached policies and pods,
    and a new or deleted policy counts at once."""
    meta = MetaManager(str(tmp_path / "meta.db"))
    await meta.open()
    try:
        net = NetworkManager(meta, node_name=NODE)
        meta.listeners.append(net._on_change)  # as start() does, without its rule syncs
        web_only = policy("a", "web", {"matchLabels": {"app": "web"}}, ["Ingress"])
        await meta.apply(new_message(source="cloudhub", group=GROUP_RESOURCE,
                                     operation=OP_SYNC, content={
                                         POD_PEERS_KIND: [pod_peer_view(p) for p in PODS],
                                         "networkpolicies": []}))
        assert not net._ingress_isolated("10.42.0.2")
        await meta.apply(new_message(source="cloudhub", group=GROUP_RESOURCE,
                                     operation=OP_INSERT, resource="networkpolicies/a/web",
                                     content=web_only))
        assert net._ingress_isolated("10.42.0.2") and not net._ingress_isolated("10.42.0.3")
        await meta.apply(new_message(source="cloudhub", group=GROUP_RESOURCE,
                                     operation=OP_DELETE, resource="networkpolicies/a/web"))
        assert not net._ingress_isolated("10.42.0.2")
    finally:
        await meta.close()


def test_ipv6_addresses_get_the_same_rules_in_an_ip6_table():
    def dual(p: dict, v6: str) -> dict:
        p["status"]["podIPs"] = [{"ip": p["status"]["podIP"]}, {"ip": v6}]
        return p
    pods = [dual(pod("a", "web", "10.42.0.2", app="web"), "fd42::2"),
            dual(pod("a", "client", "10.42.0.3", app="client"), "fd42::3"),
            pod("a", "v4only", "10.42.0.4", app="client")]
    views = [pod_peer_view(p) for p in pods]
    assert views[0]["status"]["podIPs"][1] == {"ip": "fd42::2"}
    assert "podIPs" not in views[2]["status"]  # single-stack views as before
    allow = [policy("a", "web", {"matchLabels": {"app": "web"}}, ["Ingress"], ingress=[
        {"from": [{"podSelector": {"matchLabels": {"app": "client"}}},
                  {"ipBlock": {"cidr": "fd00::/8", "except": ["fd00:1::/32"]}},
                  {"ipBlock": {"cidr": "192.168.0.0/16"}}]}])]
    namespaces = [namespace_view(n) for n in NAMESPACES]
    six = build_ruleset(allow, namespaces, pod_peers(views, 6), node_name=NODE, family=6)
    _nft_check(six)
    assert six.startswith("table ip6 k3py-policy {}") and "fd42::2 : jump ingress-" in six
    assert "ip6 saddr fd42::3 return" in six  # the v4-only client has no IPv6 to allow
    assert "ip6 saddr fd00::/8 ip6 saddr != { fd00:1::/32 } return" in six
    assert "192.168" not in six and "10.42" not in six and "ip saddr" not in six
    four = rules(allow, pods)
    assert "ip saddr { 10.42.0.3, 10.42.0.4 } return" in four and "fd" not in four
