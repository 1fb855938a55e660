"""ServiceLBController against a real Registry: the ingress IPs of a LoadBalancer Service are
the Ready nodes' InternalIPs (ExternalIPs when any has one), only `enablelb=true` nodes once a
node has the label, a node reporting a port in use or where an older Service has the port is
left out with an Event, a loadBalancerClass is left alone, and a type change clears them."""

from __future__ import annotations

import pytest

from k3py.api.servicelb import ENABLE_LB_LABEL, PORTS_IN_USE_ANNOTATION
from k3py.server.controllers.servicelb import ServiceLBController
from tests.unit.conftest import eventually

pytestmark = pytest.mark.unit


def _node(name: str, ip: str, *, ready: bool = True, labels: dict | None = None,
          annotations: dict | None = None, external: str = "") -> dict:
    addresses = [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]
    if external:
        addresses.append({"type": "ExternalIP", "address": external})
    return {"metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
            "status": {"addresses": addresses, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}]}}


def _svc(name: str, port: int = 80, **spec) -> dict:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "selector": {"app": name},
                     "ports": [{"port": port, "protocol": "TCP", "targetPort": 8080}],
                     **spec}}


async def _create_node(env, node: dict) -> None:
    status = node.pop("status")
    await env.registry.create(env.res("nodes"), None, node)

    def put(cur: dict) -> dict:
        cur["status"] = status
        return cur
    await env.registry.update_with(env.res("nodes"), None, node["metadata"]["name"], put,
                                   subresource="status")


async def _ingress(env, name: str) -> list[dict]:
    svc = await env.registry.get(env.res("services"), "default", name)
    return ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []


async def _ips(env, name: str) -> list[str]:
    return [i["ip"] for i in await _ingress(env, name)]


async def test_ready_nodes_serve_and_enablelb_label_narrows_them(env):
    await _create_node(env, _node("b", "10.0.0.12"))
    await _create_node(env, _node("a", "10.0.0.2"))
    await _create_node(env, _node("down", "10.0.0.3", ready=False))
    await env.registry.create(env.res("services"), "default", _svc("web"))
    await env.start(ServiceLBController)
    assert await eventually(lambda: _ips(env, "web"), timeout=5) == ["10.0.0.2", "10.0.0.12"]
    assert (await _ingress(env, "web"))[0]["ipMode"] == "VIP"

    def label(cur: dict) -> dict:
        cur["metadata"]["labels"][ENABLE_LB_LABEL] = "true"
        return cur
    await env.registry.update_with(env.res("nodes"), None, "b", label)

    async def only_b():
        return await _ips(env, "web") == ["10.0.0.12"]
    assert await eventually(only_b, timeout=5)

    async def messages():  # the Event is written after the status it tells of
        found = {e[3] for e in await env.events("default")
                 if e[0] == "web" and e[2] == "UpdatedLoadBalancer"}
        return found if len(found) == 2 else None
    assert await eventually(messages, timeout=5) == {
        "Updated LoadBalancer with new IPs: [] -> [10.0.0.2 10.0.0.12]",
        "Updated LoadBalancer with new IPs: [10.0.0.2 10.0.0.12] -> [10.0.0.12]"}


async def test_external_ips_win_when_any_node_has_one(env):
    await _create_node(env, _node("a", "10.0.0.2", external="203.0.113.5"))
    await _create_node(env, _node("b", "10.0.0.3"))
    await env.registry.create(env.res("services"), "default", _svc("web"))
    await env.start(ServiceLBController)
    assert await eventually(lambda: _ips(env, "web"), timeout=5) == ["203.0.113.5"]


async def test_port_in_use_and_older_service_leave_the_node_out_with_events(env):
    await _create_node(env, _node("a", "10.0.0.2",
                                  annotations={PORTS_IN_USE_ANNOTATION: "TCP/8443"}))
    await _create_node(env, _node("b", "10.0.0.3"))
    await env.registry.create(env.res("services"), "default", _svc("first", 9000))
    await env.registry.create(env.res("services"), "default", _svc("taken", 8443))
    await env.start(ServiceLBController)
    assert await eventually(lambda: _ips(env, "first"), timeout=5) == ["10.0.0.2", "10.0.0.3"]
    assert await eventually(lambda: _ips(env, "taken"), timeout=5) == ["10.0.0.3"]

    async def in_use_event():
        return [e for e in await env.events("default")
                if e[0] == "taken" and e[2] == "PortInUse"]
    (ev,) = await eventually(in_use_event, timeout=5)
    assert ev[1] == "Warning" and "TCP/8443" in ev[3] and "node a" in ev[3], ev

    # a newer Service on the same port gets no node, as a svclb pod with no free host port
    await env.registry.create(env.res("services"), "default", _svc("second", 9000))

    async def shared_event():
        return [e for e in await env.events("default")
                if e[0] == "second" and e[2] == "PortInUse"]
    evs = await eventually(shared_event, timeout=5)
    assert all("LoadBalancer default/first" in ev[3] for ev in evs), evs
    assert await _ips(env, "second") == []
    # the first one gone, the second gets the nodes
    await env.registry.delete(env.res("services"), "default", "first")
    assert await eventually(lambda: _ips(env, "second"), timeout=5) == ["10.0.0.2", "10.0.0.3"]


async def test_load_balancer_class_is_left_alone_and_type_change_clears(env):
    await _create_node(env, _node("a", "10.0.0.2"))
    await env.registry.create(env.res("services"), "default",
                              _svc("other", loadBalancerClass="example.com/lb"))
    await env.registry.create(env.res("services"), "default", _svc("web"))
    await env.start(ServiceLBController)
    assert await eventually(lambda: _ips(env, "web"), timeout=5) == ["10.0.0.2"]
    assert await _ingress(env, "other") == []

    def to_cluster_ip(cur: dict) -> dict:
        cur["spec"]["type"] = "ClusterIP"
        return cur
    await env.registry.update_with(env.res("services"), "default", "web", to_cluster_ip)

    async def cleared():
        return await _ingress(env, "web") == []
    assert await eventually(cleared, timeout=5)


async def test_external_traffic_policy_local_lists_nodes_with_ready_endpoints(env):
    await _create_node(env, _node("a", "10.0.0.2"))
    await _create_node(env, _node("b", "10.0.0.3"))
    await env.registry.create(env.res("services"), "default",
                              _svc("web", externalTrafficPolicy="Local"))
    await env.registry.create(env.res("endpointslices", "discovery.k8s.io"), "default", {
        "metadata": {"name": "web-x", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.42.0.5"], "conditions": {"ready": True},
                       "nodeName": "b", "targetRef": {"kind": "Pod", "name": "web-1"}}],
        "ports": [{"port": 8080, "protocol": "TCP"}]})
    await env.start(ServiceLBController)
    assert await eventually(lambda: _ips(env, "web"), timeout=5) == ["10.0.0.3"]
