"""In-flight limits and the request timeout on a real server: mutating requests whose bodies
trickle in hold the mutating slots; one more is answered 429 TooManyRequests with
Retry-After at once, while reads (their own pool) and watches still work; the trickling ones
are answered 504 Timeout when --request-timeout passes, and the slots are free again; a
websocket (a dashboard tab's live socket) is long-running: it outlives the timeout."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from pathlib import Path

import aiohttp
import pytest

from bench.api import client_ssl
from tests.harness import ServerProcess, wait_for

pytestmark = pytest.mark.integration


def _raw(srv: ServerProcess, ctx: ssl.SSLContext, request: bytes) -> ssl.SSLSocket:
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", srv.port), timeout=30))
    sock.sendall(request)
    return sock


def _status(sock: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


def test_inflight_limit_and_timeout(tmp_path: Path):
    srv = ServerProcess(tmp_path / "srv", extra_args=[
        "--max-mutating-requests-inflight", "2", "--request-timeout", "3"]).start()
    try:
        ctx = client_ssl(srv.kubeconfig, tmp_path)
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "slow"}}).encode()
        head = (f"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        slow = [_raw(srv, ctx, head.encode() + body[:5]) for _ in range(2)]
        time.sleep(0.5)  # both handlers are waiting for the rest of their bodies
        fast = _raw(srv, ctx, head.encode() + body)
        code, headers, text = _status(fast)
        assert code == 429 and headers.get("Retry-After") == "1", text
        assert b'"reason":"TooManyRequests"' in text
        # reads have their own pool
        assert srv.kubectl("get", "configmaps").returncode == 0

        for sock in slow:
            code, _, text = _status(sock)
            assert code == 504 and b'"reason":"Timeout"' in text, text
        # the slots are free again
        wait_for(lambda: srv.kubectl("create", "configmap", "after", check=False)
                 .returncode == 0, 10, 0.2, "a write after the slow ones ended")
    finally:
        srv.stop()


def test_failed_token_authentication_is_limited_per_address(tmp_path: Path):
    srv = ServerProcess(tmp_path / "srv").start()
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        codes = []
        for i in range(25):
            sock = _raw(srv, ctx, (f"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\n"
                                   f"Authorization: Bearer guess-{i}\r\n"
                                   f"Connection: close\r\n\r\n").encode())
            codes.append(_status(sock)[0])
            sock.close()
        assert codes[:20] == [401] * 20 and set(codes[20:]) == {429}, codes
        # the admin's client certificate still works from the same address
        assert srv.kubectl("get", "ns", "default").returncode == 0
        log = srv.log_path.read_text()
        assert "authentication failed from 127.0.0.1 (bearer token)" in log
        assert "guess-" not in log
    finally:
        srv.stop()


def test_a_websocket_outlives_the_request_timeout(tmp_path: Path):
    srv = ServerProcess(tmp_path / "srv", extra_args=["--request-timeout", "2"]).start()
    try:
        srv.kubectl("-n", "default", "create", "serviceaccount", "tab")
        srv.kubectl("create", "clusterrolebinding", "tab", "--clusterrole=view",
                    "--serviceaccount=default:tab")
        token = srv.kubectl("-n", "default", "create", "token", "tab").stdout.strip()
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

        async def tab() -> dict:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx),
                                             cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                async with http.post(srv.url + "/dashboard/login", json={"token": token},
                                     headers={"X-K3py-Dashboard": "1"}) as r:
                    assert r.status == 200, await r.text()
                async with http.ws_connect(srv.url + "/dashboard/api/live",
                                           origin=srv.url) as ws:
                    await asyncio.sleep(3)  # past --request-timeout, which cut it before
                    await ws.send_json({"op": "watch", "id": "1", "resource": "namespaces"})
                    msg = await ws.receive(timeout=10)
                    assert msg.type == aiohttp.WSMsgType.TEXT, (msg, ws.close_code)
                    return json.loads(msg.data)
        assert asyncio.run(tab())["type"] == "list"
        assert "504" not in srv.log_path.read_text()
    finally:
        srv.stop()
