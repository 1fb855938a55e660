"""The ingress proxy on real loopback sockets with real backends (aiohttp servers that say who
they are and echo what they got), asked with aiohttp and curl: host rules with wildcards,
Exact vs element-wise Prefix, longest match, defaultBackend, named service ports, TLS chosen
by SNI from a TLS secret (verified against its CA) with a default certificate otherwise,
websocket relay, a streamed 64 MiB upload, X-Forwarded-* headers, 404/502/503/504, and a new
table applied without dropping an open keep-alive connection."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import ssl
import subprocess

import aiohttp
import pytest
from aiohttp import web

from k3py import pki
from k3py.agent.ingress.proxy import IngressProxy
from k3py.agent.ingress.routes import build_routes
from tests.harness import free_port

pytestmark = pytest.mark.unit


async def _backend(name: str) -> tuple[web.AppRunner, int]:
    async def who(request: web.Request) -> web.StreamResponse:
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        return web.json_response({"backend": name, "path": request.path_qs, "size": size,
                                  "host": request.host,
                                  "xff": request.headers.get("X-Forwarded-For"),
                                  "proto": request.headers.get("X-Forwarded-Proto"),
                                  "real": request.headers.get("X-Real-IP")})

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            await sock.send_str(f"{name}:{msg.data}")
        return sock
    app = web.Application(client_max_size=0)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/{tail:.*}", who)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def _svc(name, port=80, port_name="http"):
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": port_name, "port": port}]}}


def _slice(svc, ports, port_name="http"):
    return {"metadata": {"name": f"{svc}-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "ports": [{"name": port_name, "port": p} for p in ports[:1]],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]}


def _path(path, svc, ptype="Prefix", number=80):
    return {"path": path, "pathType": ptype,
            "backend": {"service": {"name": svc, "port": {"number": number}}}}


@pytest.fixture
async def world(tmp_path):
    runners, ports = [], {}
    for name in ("app", "api", "wild", "fallback"):
        r, p = await _backend(name)
        runners.append(r)
        ports[name] = p
    ca_cert, ca_key = pki._make_ca("test CA")
    cert, key = pki._issue(ca_cert, ca_key, "secure.example.com", server=True,
                           dns=("secure.example.com",))
    (tmp_path / "ca.crt").write_bytes(ca_cert)
    secret = {"metadata": {"name": "tls", "namespace": "default"}, "type": "kubernetes.io/tls",
              "data": {"tls.crt": base64.b64encode(cert).decode(),
                       "tls.key": base64.b64encode(key).decode()}}
    ing = {"metadata": {"name": "web", "namespace": "default",
                        "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}},
                    "tls": [{"hosts": ["secure.example.com"], "secretName": "tls"}],
                    "rules": [
                        {"host": "example.com", "http": {"paths": [
                            _path("/", "app"), _path("/api", "api"),
                            _path("/api/exact", "app", "Exact")]}},
                        {"host": "*.example.com", "http": {"paths": [_path("/", "wild")]}},
                        {"host": "secure.example.com", "http": {"paths": [_path("/", "api")]}},
                        {"host": "down.example.com", "http": {"paths": [_path("/", "gone")]}},
                        {"host": "empty.example.com", "http": {"paths": [
                            _path("/", "noeps")]}}]}}
    other = {"metadata": {"name": "other", "namespace": "default"},
             "spec": {"ingressClassName": "nginx", "rules": [
                 {"host": "nginx.org", "http": {"paths": [_path("/", "app")]}}]}}
    services = [_svc(n) for n in ("app", "api", "wild", "fallback", "dead", "noeps")]
    slices = [_slice(n, [ports[n]]) for n in ("app", "api", "wild", "fallback")]
    slices.append(_slice("dead", [free_port()]))
    ing["spec"]["rules"].append({"host": "dead.example.com",
                                 "http": {"paths": [_path("/", "dead")]}})
    table = build_routes([ing, other], services, slices, [secret])
    proxy = IngressProxy(table)
    await proxy.start("127.0.0.1", 0, 0)
    yield proxy, tmp_path, (ing, other, services, slices, secret)
    await proxy.stop()
    for r in runners:
        await r.cleanup()


async def get(proxy, host, path="/", **kw):
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{proxy.ports['http']}{path}",
                         headers={"Host": host}, **kw) as r:
            text = await r.text()
            return r.status, (json.loads(text) if r.status == 200 else text)


async def test_host_and_path_routing(world):
    proxy, _, _ = world
    assert (await get(proxy, "example.com", "/x?q=1"))[1]["backend"] == "app"
    assert (await get(proxy, "example.com", "/api"))[1]["backend"] == "api"
    assert (await get(proxy, "example.com", "/api/v1"))[1]["backend"] == "api"
    assert (await get(proxy, "example.com", "/apiv1"))[1]["backend"] == "app"  # element-wise
    assert (await get(proxy, "example.com", "/api/exact"))[1]["backend"] == "app"
    assert (await get(proxy, "example.com", "/api/exact/more"))[1]["backend"] == "api"
    assert (await get(proxy, "a.example.com"))[1]["backend"] == "wild"
    assert (await get(proxy, "a.b.example.com"))[1]["backend"] == "fallback"
    assert (await get(proxy, "nginx.org"))[1]["backend"] == "fallback"  # not our class
    status, body = await get(proxy, "example.com:8080", "/x")
    assert body["backend"] == "app" and body["host"] == "example.com:8080"
    assert body["path"] == "/x" and body["proto"] == "http"
    assert body["xff"] == "127.0.0.1" and body["real"] == "127.0.0.1"


async def test_error_answers(world):
    proxy, _, (ing, other, services, slices, secret) = world
    status, text = await get(proxy, "down.example.com")
    assert status == 503 and "default/gone not found" in text
    status, text = await get(proxy, "empty.example.com")
    assert status == 503 and "no ready endpoint" in text
    status, text = await get(proxy, "dead.example.com")
    assert status == 502
    ing["spec"].pop("defaultBackend")
    proxy.table = build_routes([ing, other], services, slices, [secret])
    assert (await get(proxy, "unknown.org"))[0] == 404
    assert ("default/web", "service default/gone not found") in proxy.table.problems


async def test_tls_by_sni_and_default_certificate(world):
    proxy, tmp, _ = world
    port = proxy.ports["https"]
    ctx = ssl.create_default_context(cafile=str(tmp / "ca.crt"))
    async with aiohttp.ClientSession() as s:
        # resolve secure.example.com to 127.0.0.1 by connecting there with that SNI name
        conn = aiohttp.TCPConnector(ssl=ctx, resolver=_Loopback())
        async with aiohttp.ClientSession(connector=conn) as s2:
            async with s2.get(f"https://secure.example.com:{port}/") as r:
                body = await r.json()
        assert body["backend"] == "api" and body["proto"] == "https"
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with s.get(f"https://127.0.0.1:{port}/", ssl=ctx):
                pass
    if shutil.which("curl"):
        out = await asyncio.to_thread(  # the proxy runs in this loop: curl in a thread
            subprocess.run, ["curl", "-sv", "-k", "--resolve",
                             f"other.example.com:{port}:127.0.0.1",
                             f"https://other.example.com:{port}/"],
            capture_output=True, text=True, timeout=30)
        assert "K3PY DEFAULT CERT" in out.stderr and '"backend": "wild"' in out.stdout


class _Loopback(aiohttp.abc.AbstractResolver):
    async def resolve(self, host, port=0, family=0):
        import socket
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": 0}]

    async def close(self):
        pass


async def test_websocket_relay(world):
    proxy, _, _ = world
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"http://127.0.0.1:{proxy.ports['http']}/ws",
                                headers={"Host": "a.example.com"}) as ws:
            await ws.send_str("hello")
            assert (await ws.receive(timeout=5)).data == "wild:hello"
            await ws.send_str("again")
            assert (await ws.receive(timeout=5)).data == "wild:again"


async def test_streamed_upload_and_a_new_table_keeps_open_connections(world):
    proxy, _, (ing, other, services, slices, secret) = world
    size = 64 << 20

    async def chunks():
        block = b"x" * (1 << 20)
        for _ in range(size >> 20):
            yield block
    async with aiohttp.ClientSession() as s:  # one keep-alive connection for both requests
        url = f"http://127.0.0.1:{proxy.ports['http']}/upload"
        async with s.post(url, data=chunks(), headers={"Host": "example.com"}) as r:
            body = await r.json()
        assert body["size"] == size and body["backend"] == "app"
        ing["spec"]["rules"][0]["http"]["paths"].append(_path("/upload", "api"))
        proxy.table = build_routes([ing, other], services, slices, [secret])
        async with s.post(url, data=b"abc", headers={"Host": "example.com"}) as r:
            body = await r.json()
        assert body["backend"] == "api" and body["size"] == 3


async def test_concurrent_requests_spread(world):
    proxy, _, _ = world
    got = await asyncio.gather(*[get(proxy, "example.com", f"/n{i}") for i in range(50)])
    assert all(status == 200 for status, _ in got)


async def test_a_slow_backend_is_504(monkeypatch):
    from k3py.agent.ingress import proxy as proxy_module
    monkeypatch.setattr(proxy_module, "BACKEND_TIMEOUT", 0.3)
    answered = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await answered.wait()
        return web.Response(text="late")
    app = web.Application()
    app.router.add_get("/", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    ing = {"metadata": {"name": "slow", "namespace": "default"},
           "spec": {"rules": [{"host": "slow.example.com",
                               "http": {"paths": [_path("/", "slow")]}}]}}
    proxy = IngressProxy(build_routes([ing], [_svc("slow")], [_slice("slow", [port])], []))
    await proxy.start("127.0.0.1", 0)
    try:
        status, text = await get(proxy, "slow.example.com")
        assert status == 504 and "default/slow did not answer" in text, (status, text)
    finally:
        answered.set()
        await proxy.stop()
        await runner.cleanup()
