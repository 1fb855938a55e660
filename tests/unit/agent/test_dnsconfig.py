"""A pod's resolver settings (agent/network/dnsconfig.py) per dnsPolicy and dnsConfig."""

from __future__ import annotations

import pytest

from k3py.agent.network.dnsconfig import pod_dns_settings

pytestmark = pytest.mark.unit

CLUSTER = ("10.43.0.10", "cluster.local")


def pod(**spec):
    return {"metadata": {"namespace": "shop"}, "spec": spec}


def test_cluster_first_by_default():
    assert pod_dns_settings(pod(), CLUSTER) == (
        ["10.43.0.10"], ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"],
        ["ndots:5"])


def test_default_host_network_and_no_cluster_dns_keep_the_node_resolvers():
    assert pod_dns_settings(pod(dnsPolicy="Default"), CLUSTER) is None
    assert pod_dns_settings(pod(hostNetwork=True), CLUSTER) is None
    assert pod_dns_settings(pod(), None) is None
    servers, _, _ = pod_dns_settings(pod(hostNetwork=True,
                                         dnsPolicy="ClusterFirstWithHostNet"), CLUSTER)
    assert servers == ["10.43.0.10"]


def test_none_and_dns_config():
    cfg = {"nameservers": ["1.1.1.1"], "searches": ["corp.example"],
           "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}
    assert pod_dns_settings(pod(dnsPolicy="None", dnsConfig=cfg), CLUSTER) == (
        ["1.1.1.1"], ["corp.example"], ["ndots:2", "edns0"])
    servers, searches, options = pod_dns_settings(pod(dnsConfig=cfg), CLUSTER)
    assert servers == ["10.43.0.10", "1.1.1.1"]
    assert searches[-1] == "corp.example" and options == ["ndots:2", "edns0"]
