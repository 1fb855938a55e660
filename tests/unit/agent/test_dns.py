"""The node's DNS server on a real loopback socket, asked with dnspython and with `dig`: the
cluster zone as CoreDNS's kubernetes plugin answers it (A/AAAA, headless, SRV, ExternalName,
pod names, PTR, NXDOMAIN vs NODATA with the SOA, TTLs), truncation and TCP, and forwarding of
other names to an upstream server (a second DNSServer standing in for the host's resolver),
cached, and SERVFAIL when no upstream answers."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from k3py.agent.network.dns import DNSServer, host_resolvers
from k3py.agent.network.records import TTL, ClusterRecords

pytestmark = pytest.mark.unit


def _svc(name, ns="default", ip="10.43.0.20", ports=(("http", 80, "TCP"),), **spec):
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "clusterIPs": [ip] if ip else [],
                     "ports": [{"name": n, "port": p, "protocol": pr} for n, p, pr in ports],
                     **spec}}


def _slice(svc, name, endpoints, ns="default"):
    return {"metadata": {"name": name, "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "endpoints": endpoints}


def records() -> ClusterRecords:
    r = ClusterRecords("cluster.local")
    r.set_service(_svc("web"))
    r.set_service(_svc("dual", ip="10.43.0.21", clusterIPs=["10.43.0.21", "fd43::21"]))
    r.set_service(_svc("db", ip="None", ports=(("pg", 5432, "TCP"),)))
    r.set_endpointslice(_slice("db", "db-abc", [
        {"addresses": ["10.42.0.5"], "hostname": "db-0", "conditions": {"ready": True}},
        {"addresses": ["10.42.1.6"], "conditions": {"ready": True}},
        {"addresses": ["10.42.1.7"], "conditions": {"ready": False}}]))
    r.set_service(_svc("ext", ip="", type="ExternalName", externalName="example.org"))
    r.set_service(_svc("dns", ns="kube-system", ip="10.43.0.10",
                       ports=(("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"))))
    return r


@pytest.fixture
async def server():
    upstream = DNSServer(ClusterRecords("upstream.test"), upstreams=lambda: [])
    up_records = upstream.records
    up_records.set_service(_svc("far", ip="192.0.2.7"))
    await upstream.start("127.0.0.1", 0)
    srv = DNSServer(records(), upstreams=lambda: [("127.0.0.1", upstream.port)])
    await srv.start("127.0.0.1", 0)
    srv.upstream_server = upstream  # type: ignore[attr-defined]
    yield srv
    await srv.stop()
    await upstream.stop()


async def ask(srv, name, rtype="A", tcp=False) -> dns.message.Message:
    q = dns.message.make_query(name, rtype)
    fn = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
    return await fn(q, "127.0.0.1", port=srv.port, timeout=3)


def texts(resp, rtype) -> list[str]:
    return sorted(rd.to_text() for rr in resp.answer if rr.rdtype == dns.rdatatype.from_text(rtype)
                  for rd in rr)


async def test_service_names_answer_as_coredns(server):
    r = await ask(server, "web.default.svc.cluster.local")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert texts(r, "A") == ["10.43.0.20"] and r.answer[0].ttl == TTL
    assert texts(await ask(server, "dual.default.svc.cluster.local", "AAAA"), "AAAA") == \
        ["fd43::21"]
    # headless: the ready endpoints only
    assert texts(await ask(server, "db.default.svc.cluster.local"), "A") == \
        ["10.42.0.5", "10.42.1.6"]
    assert texts(await ask(server, "db-0.db.default.svc.cluster.local"), "A") == ["10.42.0.5"]
    assert texts(await ask(server, "10-42-1-6.db.default.svc.cluster.local"), "A") == \
        ["10.42.1.6"]
    r = await ask(server, "ext.default.svc.cluster.local")
    assert texts(r, "CNAME") == ["example.org."]
    assert texts(await ask(server, "1-2-3-4.default.pod.cluster.local"), "A") == ["1.2.3.4"]


async def test_srv_records(server):
    r = await ask(server, "_dns._udp.dns.kube-system.svc.cluster.local", "SRV")
    assert texts(r, "SRV") == ["0 100 53 dns.kube-system.svc.cluster.local."]
    r = await ask(server, "_pg._tcp.db.default.svc.cluster.local", "SRV")
    assert texts(r, "SRV") == ["0 50 5432 10-42-1-6.db.default.svc.cluster.local.",
                               "0 50 5432 db-0.db.default.svc.cluster.local."]
    r = await ask(server, "_nope._tcp.db.default.svc.cluster.local", "SRV")
    assert r.rcode() == dns.rcode.NXDOMAIN


async def test_nxdomain_versus_nodata(server):
    for name in ("missing.default.svc.cluster.local", "web.nons.svc.cluster.local",
                 "web.default.svc.cluster.local.default.svc.cluster.local",
                 "nothing.cluster.local"):
        r = await ask(server, name)
        assert r.rcode() == dns.rcode.NXDOMAIN, name
        assert r.authority and r.authority[0].rdtype == dns.rdatatype.SOA, name
    for name, rtype in (("web.default.svc.cluster.local", "AAAA"),
                        ("default.svc.cluster.local", "A"), ("svc.cluster.local", "A"),
                        ("ext.default.svc.cluster.local", "TXT")):
        r = await ask(server, name, rtype)
        assert r.rcode() == dns.rcode.NOERROR and not r.answer, (name, rtype)
        assert r.authority[0].rdtype == dns.rdatatype.SOA


async def test_reverse_lookup_of_cluster_ips(server):
    r = await ask(server, "20.0.43.10.in-addr.arpa", "PTR")
    assert texts(r, "PTR") == ["web.default.svc.cluster.local."]
    r = await ask(server, "5.0.42.10.in-addr.arpa", "PTR")
    assert texts(r, "PTR") == ["db-0.db.default.svc.cluster.local."]


async def test_updates_are_answered_at_once(server):
    server.records.delete_service("default", "web")
    assert (await ask(server, "web.default.svc.cluster.local")).rcode() == dns.rcode.NXDOMAIN
    server.records.set_endpointslice(_slice("db", "db-abc", []))
    r = await ask(server, "db.default.svc.cluster.local")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer


async def test_forwarding_cache_and_servfail(server):
    r = await ask(server, "far.default.svc.upstream.test")
    assert texts(r, "A") == ["192.0.2.7"] and not r.flags & dns.flags.AA
    assert (await ask(server, "gone.default.svc.upstream.test")).rcode() == dns.rcode.NXDOMAIN
    await server.upstream_server.stop()  # the uplink is gone: the cache still answers
    r = await ask(server, "far.default.svc.upstream.test")
    assert texts(r, "A") == ["192.0.2.7"]
    r = await ask(server, "other.default.svc.upstream.test")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert texts(await ask(server, "web.default.svc.cluster.local"), "A") == ["10.43.0.20"]


async def test_large_answers_truncate_over_udp_and_come_whole_over_tcp(server):
    server.records.set_service(_svc("big", ip="None"))
    server.records.set_endpointslice(_slice("big", "big-1", [
        {"addresses": [f"10.42.{i // 200}.{i % 200 + 1}"]} for i in range(100)]))
    q = dns.message.make_query("big.default.svc.cluster.local", "A", use_edns=False)
    r = await dns.asyncquery.udp(q, "127.0.0.1", port=server.port, timeout=3)
    assert r.flags & dns.flags.TC
    r = await ask(server, "big.default.svc.cluster.local", tcp=True)
    assert len(texts(r, "A")) == 100


async def test_garbage_gets_no_crash(server):
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", server.port))
    transport.sendto(b"\x00\x01garbage-garbage")
    transport.sendto(b"x")
    transport.close()
    assert texts(await ask(server, "web.default.svc.cluster.local"), "A") == ["10.43.0.20"]


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig (bind9-dnsutils) not installed")
async def test_dig_agrees(server):
    def dig(*args: str) -> str:
        return subprocess.run(["dig", "@127.0.0.1", "-p", str(server.port), "+short", *args],
                              capture_output=True, text=True, timeout=10, check=True).stdout
    assert (await asyncio.to_thread(dig, "web.default.svc.cluster.local")).split() == \
        ["10.43.0.20"]
    out = await asyncio.to_thread(dig, "SRV", "_http._tcp.web.default.svc.cluster.local")
    assert out.split() == ["0", "100", "80", "web.default.svc.cluster.local."]
    assert (await asyncio.to_thread(dig, "+tcp", "far.default.svc.upstream.test")).split() \
        == ["192.0.2.7"]


def test_host_resolvers(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("search lan\nnameserver 192.0.2.1\nnameserver 10.43.0.10\n"
                    "options ndots:5\n")
    assert host_resolvers(str(conf), exclude=("10.43.0.10",)) == [("192.0.2.1", 53)]
    assert host_resolvers(str(tmp_path / "absent")) == []
