"""Endpoints and EndpointSlice controllers against a real Registry: ready and not-ready pod
IPs, named targetPorts, slice labels/conditions, and clean-up when the Service goes."""

from __future__ import annotations

import pytest

from k3py.server.controllers.endpoints import EndpointsController, build_subsets, pod_ports
from k3py.server.controllers.endpointslice import EndpointSliceController
from tests.unit.conftest import eventually

pytestmark = pytest.mark.unit


@pytest.fixture
async def cluster(env):
    await env.start(EndpointsController, EndpointSliceController)
    return env.registry


SVC = {"metadata": {"name": "web", "namespace": "default", "uid": "svc-uid"},
       "spec": {"selector": {"app": "web"}, "clusterIP": "10.43.0.10",
                "ports": [{"name": "http", "port": 80, "targetPort": "http",
                           "protocol": "TCP"}]}}


def pod(name: str, ip: str | None, ready: bool, app: str = "web", port_name: str = "http"):
    status: dict = {"phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": {"name": name, "namespace": "default", "labels": {"app": app},
                         "uid": f"uid-{name}"},
            "spec": {"nodeName": "n1", "containers": [{
                "name": "c", "image": "nginx",
                "ports": [{"name": port_name, "containerPort": 8080}]}]},
            "status": status}


def test_subsets_ready_notready_and_named_ports():
    pods = [pod("a", "10.42.0.2", True), pod("b", "10.42.0.1", False),
            pod("c", None, True), pod("d", "10.42.0.9", True, app="other"),
            pod("e", "10.42.0.5", True, port_name="metrics")]
    assert pod_ports(SVC, pods[0]) == (("http", 8080, "TCP", ""),)
    subsets = build_subsets(SVC, pods)
    assert len(subsets) == 1
    assert [a["ip"] for a in subsets[0]["addresses"]] == ["10.42.0.2"]
    assert [a["ip"] for a in subsets[0]["notReadyAddresses"]] == ["10.42.0.1"]
    assert subsets[0]["addresses"][0]["targetRef"]["name"] == "a"
    assert subsets[0]["addresses"][0]["nodeName"] == "n1"
    assert subsets[0]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]


async def test_endpoints_and_slices_follow_pods(cluster):
    reg = cluster
    svc_res = reg.resources.find("", "services")
    pods = reg.resources.find("", "pods")
    ep_res = reg.resources.find("", "endpoints")
    es_res = reg.resources.find("discovery.k8s.io", "endpointslices")
    svc = {"metadata": {"name": "web"}, "spec": {
        "selector": {"app": "web"}, "clusterIP": "10.43.0.10",
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}
    await reg.create(svc_res, "default", svc)
    await reg.create(pods, "default", pod("a", "10.42.0.2", True))
    await reg.create(pods, "default", pod("b", "10.42.0.3", False))

    async def endpoints():
        ep = await reg.try_get(ep_res, "default", "web")
        subs = (ep or {}).get("subsets") or []
        return subs and subs[0].get("addresses") and subs[0].get("notReadyAddresses") and ep
    ep = await eventually(endpoints, timeout=10.0)
    assert ep["subsets"][0]["addresses"][0]["ip"] == "10.42.0.2"

    async def slices():
        items = (await reg.list(es_res, "default"))["items"]
        return len(items) == 1 and len(items[0].get("endpoints") or []) == 2 and items
    items = await eventually(slices, timeout=10.0)
    s = items[0]
    assert s["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
    assert s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == \
        "endpointslice-controller.k8s.io"
    assert s["addressType"] == "IPv4"
    assert s["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    by_ip = {e["addresses"][0]: e for e in s["endpoints"]}
    assert by_ip["10.42.0.2"]["conditions"]["ready"] is True
    assert by_ip["10.42.0.3"]["conditions"]["ready"] is False
    assert s["metadata"]["ownerReferences"][0]["kind"] == "Service"

    await reg.delete(pods, "default", "b", {"gracePeriodSeconds": 0})  # as its node confirms

    async def one_left():
        items = (await reg.list(es_res, "default"))["items"]
        ep = await reg.get(ep_res, "default", "web")
        return len(items) == 1 and len(items[0].get("endpoints") or []) == 1 and \
            not ep["subsets"][0].get("notReadyAddresses")
    await eventually(one_left, timeout=10.0)

    await reg.delete(svc_res, "default", "web")

    async def gone():
        return await reg.try_get(ep_res, "default", "web") is None and \
            not (await reg.list(es_res, "default"))["items"]
    await eventually(gone, timeout=10.0)


def _dual(name: str, v4: str, v6: str, ready: bool = True) -> dict:
    p = pod(name, v4, ready)
    p["status"]["podIPs"] = [{"ip": v4}, {"ip": v6}]
    return p


async def test_dual_stack_service_gets_a_slice_per_family(cluster):
    reg = cluster
    es_res = reg.resources.find("discovery.k8s.io", "endpointslices")
    svc = {"metadata": {"name": "ds"}, "spec": {
        "selector": {"app": "web"}, "clusterIP": "10.43.0.11",
        "clusterIPs": ["10.43.0.11", "fd43::11"], "ipFamilyPolicy": "PreferDualStack",
        "ipFamilies": ["IPv4", "IPv6"],
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}
    await reg.create(reg.resources.find("", "services"), "default", svc)
    pods = reg.resources.find("", "pods")
    await reg.create(pods, "default", _dual("a", "10.42.0.2", "fd42::2"))
    await reg.create(pods, "default", pod("v4only", "10.42.0.3", True))

    async def slices():
        items = (await reg.list(es_res, "default"))["items"]
        by = {s["addressType"]: sorted(e["addresses"][0] for e in s.get("endpoints") or [])
              for s in items}
        return by if len(items) == 2 and len(by.get("IPv4", [])) == 2 and by.get("IPv6") \
            else None
    assert await eventually(slices, timeout=10.0) == {
        "IPv4": ["10.42.0.2", "10.42.0.3"], "IPv6": ["fd42::2"]}
    ep = await reg.get(reg.resources.find("", "endpoints"), "default", "ds")
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == ["10.42.0.2", "10.42.0.3"]
    # an IPv6-primary Service lists its pods' IPv6 addresses in Endpoints
    six = _dual("b", "10.42.0.4", "fd42::4")
    six["metadata"]["labels"] = {"app": "six"}
    await reg.create(pods, "default", six)
    await reg.create(reg.resources.find("", "services"), "default", {
        "metadata": {"name": "six"}, "spec": {
            "selector": {"app": "six"}, "clusterIP": "fd43::12", "ipFamilies": ["IPv6"],
            "ipFamilyPolicy": "SingleStack", "ports": [{"port": 80, "protocol": "TCP"}]}})

    async def six_endpoints():
        ep = await reg.try_get(reg.resources.find("", "endpoints"), "default", "six")
        subs = (ep or {}).get("subsets") or []
        return subs and [a["ip"] for a in subs[0].get("addresses") or []]
    assert await eventually(six_endpoints, timeout=10.0) == ["fd42::4"]
