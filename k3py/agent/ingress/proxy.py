"""The ingress proxy: HTTP on one port and HTTPS on another, routed by the RouteTable
(routes.py), to the backend Service's endpoints, with aiohttp on both sides.

- Bodies are streamed both ways (a large upload is never held in memory), HTTP/1.1 keep-alive
  to clients and to backends (one pooled client session), websocket upgrades relayed frame by
  frame, `X-Forwarded-For/Proto/Host/Port` and `X-Real-IP` set, the Host header kept.
- Endpoints are tried in turn (local ones first in the table, round robin within); a backend
  that refuses the connection is skipped for the next; none left: 502. No route: 404; a
  backend with no ready endpoint or an unusable one: 503; a backend slower than
  BACKEND_TIMEOUT to answer: 504. Each with a one-line text body.
- TLS: the certificate of the Ingress's TLS secret for the SNI name (exact, then wildcard),
  else a generated default certificate. A new table applies to the next request; open
  connections are not dropped."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import ssl
import tempfile

import aiohttp
from aiohttp import web

from k3py.agent.ingress.routes import Backend, RouteTable

__all__ = ["IngressProxy"]

log = logging.getLogger("k3py.ingress")

BACKEND_TIMEOUT = 60.0
CONNECT_TIMEOUT = 5.0
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade"}


def _forward_headers(request: web.Request, scheme: str) -> dict[str, str]:
    hop = _HOP | {h.strip().lower() for h in request.headers.get("Connection", "").split(",")}
    out = {k: v for k, v in request.headers.items() if k.lower() not in hop}
    peer = request.remote or ""
    prior = request.headers.get("X-Forwarded-For")
    out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    out["X-Forwarded-Proto"] = scheme
    out["X-Forwarded-Host"] = request.host
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if sockname:
        out["X-Forwarded-Port"] = str(sockname[1])
    out["X-Real-IP"] = peer
    return out


def _error(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n")


class IngressProxy:
    def __init__(self, table: RouteTable | None = None) -> None:
        self.table = table or RouteTable()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._rr = itertools.count()
        self._certdir = tempfile.mkdtemp(prefix="k3py-ingress-")
        self._contexts: dict[tuple[str, str], ssl.SSLContext] = {}
        self._default_ctx: ssl.SSLContext | None = None
        self.ports: dict[str, int] = {}

    # ---------------------------------------------------------------- lifecycle

    async def start(self, host: str | None, http_port: int,
                    https_port: int | None = None) -> None:
        """Listen on `host` (None: every address) at the two ports (0: any free port)."""
        app = web.Application(client_max_size=0, handler_args={"max_field_size": 16384})
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=256, ttl_dns_cache=None),
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT,
                                          sock_read=BACKEND_TIMEOUT))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sites = [("http", web.TCPSite(self._runner, host, http_port, reuse_address=True))]
        if https_port is not None:
            sites.append(("https", web.TCPSite(self._runner, host, https_port,
                                               ssl_context=self._server_context(),
                                               reuse_address=True)))
        for scheme, site in sites:
            await site.start()
            server = site._server  # noqa: SLF001 - the bound port when 0 was asked
            assert server is not None and server.sockets
            self.ports[scheme] = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        with contextlib.suppress(OSError):
            for name in os.listdir(self._certdir):
                os.unlink(os.path.join(self._certdir, name))
            os.rmdir(self._certdir)

    # ---------------------------------------------------------------- TLS

    def _server_context(self) -> ssl.SSLContext:
        from k3py import pki  # only a proxy that serves TLS pays for cryptography
        cert, key = pki.default_serving_cert("K3PY DEFAULT CERT")
        self._default_ctx = self._context(cert.decode(), key.decode())
        ctx = self._default_ctx
        ctx.sni_callback = self._sni
        return ctx

    def _context(self, cert: str, key: str) -> ssl.SSLContext:
        ctx = self._contexts.get((cert, key))
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            path = os.path.join(self._certdir, f"{len(self._contexts)}.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key.strip() + "\n" + cert.strip() + "\n")
            ctx.load_cert_chain(path)
            self._contexts[(cert, key)] = ctx
        return ctx

    def _sni(self, sslobj: ssl.SSLObject, server_name: str | None,
             _ctx: ssl.SSLContext) -> None:
        pair = self.table.cert_for(server_name) if server_name else None
        if pair is not None:
            try:
                sslobj.context = self._context(*pair)
            except (ssl.SSLError, OSError) as e:
                log.warning("TLS certificate for %s is unusable: %s", server_name, e)

    # ---------------------------------------------------------------- requests

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        backend = self.table.match(request.host, request.path)
        if backend is None:
            return _error(404, "404 page not found")
        if backend.error:
            return _error(503, f"503 Service Unavailable: {backend.error}")
        if not backend.endpoints:
            return _error(503, f"503 Service Unavailable: no ready endpoint for "
                               f"{backend.service}")
        scheme = "https" if request.secure else "http"
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, backend, scheme)
        return await self._forward(request, backend, scheme)

    def _order(self, backend: Backend) -> list[tuple[str, int]]:
        eps = backend.endpoints
        start = next(self._rr) % len(eps)
        return eps[start:] + eps[:start]

    async def _forward(self, request: web.Request, backend: Backend,
                       scheme: str) -> web.StreamResponse:
        assert self._session is not None
        headers = _forward_headers(request, scheme)
        body = request.content if request.body_exists else None
        for ip, port in self._order(backend):
            url = f"http://{_host(ip)}:{port}{request.rel_url}"
            try:
                async with self._session.request(request.method, url, headers=headers,
                                                 data=body, allow_redirects=False) as up:
                    resp = web.StreamResponse(status=up.status, reason=up.reason)
                    hop = _HOP | {h.strip().lower()
                                  for h in up.headers.get("Connection", "").split(",")}
                    for k, v in up.headers.items():
                        if k.lower() not in hop:
                            resp.headers.add(k, v)
                    await resp.prepare(request)
                    async for chunk in up.content.iter_any():
                        await resp.write(chunk)
                    await resp.write_eof()
                    return resp
            except aiohttp.ClientConnectorError as e:
                log.debug("backend %s:%s of %s: %s", ip, port, backend.service, e)
                if body is not None and body.total_bytes:
                    break  # part of the body went: it cannot be sent again
                continue
            except (TimeoutError, aiohttp.ServerTimeoutError):
                return _error(504, f"504 Gateway Timeout: {backend.service} did not answer")
            except aiohttp.ClientError as e:
                return _error(502, f"502 Bad Gateway: {backend.service}: {e}")
        return _error(502, f"502 Bad Gateway: no endpoint of {backend.service} answered")

    async def _websocket(self, request: web.Request, backend: Backend,
                         scheme: str) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in _forward_headers(request, scheme).items()
                   if not k.lower().startswith("sec-websocket")}
        protocols = [p.strip() for p in
                     request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        for ip, port in self._order(backend):
            url = f"ws://{_host(ip)}:{port}{request.rel_url}"
            try:
                up = await self._session.ws_connect(url, headers=headers, protocols=protocols,
                                                    autoping=False, max_msg_size=0)
            except aiohttp.ClientConnectorError:
                continue
            except aiohttp.ClientError as e:
                return _error(502, f"502 Bad Gateway: {backend.service}: {e}")
            down = web.WebSocketResponse(protocols=(up.protocol,) if up.protocol else (),
                                         autoping=False, max_msg_size=0)
            await down.prepare(request)
            await asyncio.gather(_pump(down, up), _pump(up, down))
            return down
        return _error(502, f"502 Bad Gateway: no endpoint of {backend.service} answered")


async def _pump(src, dst) -> None:
    """Frames from `src` to `dst` until either side closes."""
    try:
        async for msg in src:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            elif msg.type == aiohttp.WSMsgType.PING:
                await dst.ping(msg.data)
            elif msg.type == aiohttp.WSMsgType.PONG:
                await dst.pong(msg.data)
    except (ConnectionError, RuntimeError):
        pass
    finally:
        with contextlib.suppress(Exception):
            await dst.close(code=src.close_code or 1000)


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip
