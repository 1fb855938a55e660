"""Service IP and NodePort allocation through the registry hooks: dynamic and requested values,
conflicts as 422, headless, release on delete, immutability on update, rebuild at start."""

import pytest

from k3py.api import errors
from k3py.server.admission import AdmissionChain
from k3py.server.controllers.service import (
    IPAllocator,
    PortAllocator,
    ServiceAllocator,
    ensure_kubernetes_service,
)
from tests.unit.controllers.test_core_support import cluster

pytestmark = pytest.mark.unit


def svc(name, type_="ClusterIP", **spec):
    ports = spec.pop("ports", [{"port": 80}])
    return {"metadata": {"name": name}, "spec": {"type": type_, "selector": {"app": name},
                                                 "ports": ports, **spec}}


def test_ip_allocator_bounds() -> None:
    a = IPAllocator("10.43.0.0/29")  # .1 reserved, .2-.6 dynamic
    got = {a.allocate() for _ in range(5)}
    assert got == {f"10.43.0.{i}" for i in range(2, 7)}
    with pytest.raises(ValueError, match="range is full"):
        a.allocate()
    assert a.allocate("10.43.0.1") == "10.43.0.1"
    with pytest.raises(ValueError, match="not in the valid range"):
        a.allocate("10.43.0.7")
    a.release_ip("10.43.0.3")
    assert a.allocate() == "10.43.0.3"


def test_port_allocator() -> None:
    p = PortAllocator("30000-30002")
    assert p.allocate(30001) == 30001
    with pytest.raises(ValueError, match="provided port is already allocated"):
        p.allocate(30001)
    assert {p.allocate(), p.allocate()} == {30000, 30002}


async def test_allocation_through_registry(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        alloc = ServiceAllocator(c.registry, "10.43.0.0/16", "30000-32767")
        alloc.install(c.registry.admission)
        await alloc.rebuild(repair_interval=0)
        k = await ensure_kubernetes_service(c.registry, alloc.kubernetes_ip, "192.168.1.10", 6443)
        assert k["spec"]["clusterIP"] == "10.43.0.1"
        assert k["spec"]["ports"][0]["targetPort"] == 6443
        ep = await c.get("endpoints", "default", "kubernetes")
        assert ep["subsets"] == [{"addresses": [{"ip": "192.168.1.10"}],
                                  "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]
        sl = await c.get("endpointslices", "default", "kubernetes", group="discovery.k8s.io")
        assert sl["endpoints"][0]["addresses"] == ["192.168.1.10"]
        # address changed
        await ensure_kubernetes_service(c.registry, alloc.kubernetes_ip, "192.168.1.11", 6444)
        ep = await c.get("endpoints", "default", "kubernetes")
        assert ep["subsets"][0]["addresses"] == [{"ip": "192.168.1.11"}]
        k = await c.get("services", "default", "kubernetes")
        assert k["spec"]["ports"][0]["targetPort"] == 6444

        a = await c.create("services", svc("a"))
        ip = a["spec"]["clusterIP"]
        assert a["spec"]["clusterIPs"] == [ip] and ip.startswith("10.43.") and ip != "10.43.0.1"
        h = await c.create("services", svc("h", clusterIP="None"))
        assert h["spec"]["clusterIPs"] == ["None"]

        np = await c.create("services", svc("np", "NodePort",
                                             ports=[{"port": 80, "nodePort": 30080}]))
        assert np["spec"]["ports"][0]["nodePort"] == 30080
        with pytest.raises(errors.StatusError) as e:
            await c.create("services", svc("np2", "NodePort",
                                           ports=[{"port": 80, "nodePort": 30080}]))
        assert e.value.code == 422
        assert e.value.message == ('Service "np2" is invalid: spec.ports[0].nodePort: Invalid '
                                   'value: 30080: provided port is already allocated')
        with pytest.raises(errors.StatusError) as e:
            await c.create("services", svc("dup", clusterIP=ip))
        assert "provided IP is already allocated" in e.value.message
        lb = await c.create("services", svc("lb", "LoadBalancer"))
        assert 30000 <= lb["spec"]["ports"][0]["nodePort"] <= 32767

        # a PUT without the allocated values keeps them
        res = c.res("services")
        body = svc("a")
        body["metadata"]["labels"] = {"x": "y"}
        out = await c.registry.update(res, "default", "a", body)
        assert out["spec"]["clusterIP"] == ip
        # type change to NodePort allocates, back to ClusterIP drops the port
        body = svc("a", "NodePort")
        out = await c.registry.update(res, "default", "a", body)
        assert out["spec"]["ports"][0]["nodePort"] >= 30000
        out = await c.registry.update(res, "default", "a", {**out, "spec": {
            **out["spec"], "type": "ClusterIP", "externalTrafficPolicy": None}})
        assert "nodePort" not in out["spec"]["ports"][0]

        await c.delete("services", "default", "np")
        again = await c.create("services", svc("np3", "NodePort",
                                               ports=[{"port": 80, "nodePort": 30080}]))
        assert again["spec"]["ports"][0]["nodePort"] == 30080

        # a fresh allocator (a restarted server's chain) learns the taken values from the store
        c.registry.admission = AdmissionChain()
        fresh = ServiceAllocator(c.registry, "10.43.0.0/16", "30000-32767")
        fresh.install(c.registry.admission)
        await fresh.rebuild(repair_interval=0)
        with pytest.raises(errors.StatusError):
            await c.create("services", svc("np4", "NodePort",
                                           ports=[{"port": 80, "nodePort": 30080}]))
