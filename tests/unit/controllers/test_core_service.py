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


DUAL = "10.43.0.0/16,2001:cafe:43::/112"


async def _invalid(c, body, update: bool = False) -> str:
    with pytest.raises(errors.StatusError) as e:
        if update:
            await c.registry.update(c.res("services"), "default", body["metadata"]["name"], body)
        else:
            await c.create("services", body)
    assert e.value.code == 422, e.value.message
    return e.value.message


async def test_ip_families_on_a_dual_stack_cluster(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        alloc = ServiceAllocator(c.registry, DUAL, "30000-32767")
        alloc.install(c.registry.admission)
        await alloc.rebuild(repair_interval=0)
        one = (await c.create("services", svc("one")))["spec"]
        assert (one["ipFamilyPolicy"], one["ipFamilies"]) == ("SingleStack", ["IPv4"])
        assert len(one["clusterIPs"]) == 1 and one["clusterIP"].startswith("10.43.")
        six = (await c.create("services", svc("six", ipFamilies=["IPv6"])))["spec"]
        assert six["ipFamilies"] == ["IPv6"] and six["clusterIP"].startswith("2001:cafe:43::")
        both = (await c.create("services", svc("both", ipFamilyPolicy="PreferDualStack")))
        spec = both["spec"]
        assert spec["ipFamilies"] == ["IPv4", "IPv6"]
        assert [ip[:4] for ip in spec["clusterIPs"]] == ["10.4", "2001"]
        req = (await c.create("services", svc("req", ipFamilyPolicy="RequireDualStack",
                                              ipFamilies=["IPv6"])))["spec"]
        assert req["ipFamilies"] == ["IPv6", "IPv4"] and ":" in req["clusterIP"]
        asked = (await c.create("services", svc(
            "asked", ipFamilyPolicy="PreferDualStack", clusterIP="10.43.7.7",
            clusterIPs=["10.43.7.7", "2001:cafe:43::77"])))["spec"]
        assert asked["clusterIPs"] == ["10.43.7.7", "2001:cafe:43::77"]
        headless = (await c.create("services", {"metadata": {"name": "hl"}, "spec": {
            "clusterIP": "None", "ports": [{"port": 80}]}}))["spec"]
        assert (headless["ipFamilyPolicy"], headless["ipFamilies"]) == \
            ("RequireDualStack", ["IPv4", "IPv6"])
        assert headless["clusterIPs"] == ["None"]

        assert await _invalid(c, svc("x", clusterIP="10.43.8.8", clusterIPs=[
            "10.43.8.8", "2001:cafe:43::88"])) == (
            'Service "x" is invalid: spec.ipFamilyPolicy: Invalid value: "SingleStack": must '
            "be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are "
            "specified")
        assert await _invalid(c, svc("x", ipFamilyPolicy="PreferDualStack", clusterIP=
                                     "10.43.8.8", clusterIPs=["10.43.8.8", "10.43.8.9"])) == (
            'Service "x" is invalid: spec.clusterIPs: Invalid value: []string{"10.43.8.8", '
            '"10.43.8.9"}: may specify no more than one IP for each IP family')
        assert "expected an IPv6 value as indicated by `ipFamilies[0]`" in await _invalid(
            c, svc("x", ipFamilies=["IPv6"], clusterIP="10.43.8.8"))
        assert await _invalid(c, svc("x", ipFamilyPolicy="Both")) == (
            'Service "x" is invalid: spec.ipFamilyPolicy: Unsupported value: "Both": '
            'supported values: "PreferDualStack", "RequireDualStack", "SingleStack"')

        # upgrade: PreferDualStack adds the secondary; the primary stays
        body = {**one, "ipFamilyPolicy": "PreferDualStack"}
        up = await c.registry.update(c.res("services"), "default", "one",
                                     {"metadata": {"name": "one"}, "spec": body})
        assert up["spec"]["ipFamilies"] == ["IPv4", "IPv6"]
        assert up["spec"]["clusterIPs"][0] == one["clusterIP"] and \
            len(up["spec"]["clusterIPs"]) == 2
        # dropping the secondary IP needs SingleStack
        down = {"metadata": {"name": "one"}, "spec": {
            **up["spec"], "clusterIPs": up["spec"]["clusterIPs"][:1]}}
        assert "must be 'SingleStack' to release the secondary cluster IP" in \
            await _invalid(c, down, update=True)
        down["spec"].update(ipFamilyPolicy="SingleStack", ipFamilies=["IPv4"])
        out = await c.registry.update(c.res("services"), "default", "one", down)
        assert out["spec"]["clusterIPs"] == [one["clusterIP"]]
        assert out["spec"]["ipFamilies"] == ["IPv4"]
        # the released secondary can be asked for by another Service
        again = await c.create("services", svc("again", ipFamilies=["IPv6"], clusterIP=
                                               up["spec"]["clusterIPs"][1]))
        assert again["spec"]["clusterIP"] == up["spec"]["clusterIPs"][1]
        # the primary never changes
        moved = {"metadata": {"name": "six"}, "spec": {
            **six, "clusterIP": "2001:cafe:43::99", "clusterIPs": ["2001:cafe:43::99"]}}
        assert await _invalid(c, moved, update=True) == (
            'Service "six" is invalid: spec.clusterIPs[0]: Invalid value: '
            '[]string{"2001:cafe:43::99"}: may not change once set')
        swapped = {"metadata": {"name": "six"}, "spec": {**six, "ipFamilies": ["IPv4"]}}
        assert "expected an IPv4 value as indicated by `ipFamilies[0]`" in await _invalid(
            c, swapped, update=True)


async def test_ip_families_on_a_single_stack_cluster(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        alloc = ServiceAllocator(c.registry, "10.43.0.0/16", "30000-32767")
        alloc.install(c.registry.admission)
        await alloc.rebuild(repair_interval=0)
        prefer = (await c.create("services", svc("p", ipFamilyPolicy="PreferDualStack")))
        assert prefer["spec"]["ipFamilies"] == ["IPv4"]
        assert len(prefer["spec"]["clusterIPs"]) == 1
        assert await _invalid(c, svc("r", ipFamilyPolicy="RequireDualStack")) == (
            'Service "r" is invalid: spec.ipFamilyPolicy: Invalid value: "RequireDualStack": '
            "this cluster is not configured for dual-stack services")
        assert await _invalid(c, svc("s", ipFamilies=["IPv6"])) == (
            'Service "s" is invalid: spec.ipFamilies[0]: Invalid value: "IPv6": not '
            "configured on this cluster")
        assert await _invalid(c, svc("t", clusterIP="2001:cafe:43::5")) == (
            'Service "t" is invalid: spec.clusterIPs[0]: Invalid value: '
            '[]string{"2001:cafe:43::5"}: IPv6 is not configured on this cluster')
        ext = await c.create("services", {"metadata": {"name": "e"}, "spec": {
            "type": "ExternalName", "externalName": "example.com"}})
        assert "ipFamilies" not in ext["spec"] and "clusterIP" not in ext["spec"]
        assert await _invalid(c, {"metadata": {"name": "e2"}, "spec": {
            "type": "ExternalName", "externalName": "example.com",
            "ipFamilies": ["IPv4"]}}) == (
            'Service "e2" is invalid: spec.ipFamilies: Forbidden: may not be set for '
            'ExternalName services')
