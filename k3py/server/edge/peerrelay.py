"""Streams to a node whose tunnel another server holds: the server the client reached asks its
peers (the servers with a current apiserver Lease) in turn and relays the request, bytes both
ways, to the one that holds the node's tunnel.

Used by streams.install when several servers share a datastore. A peer is authenticated both
ways: it must serve a certificate of the cluster's server CA, and we present a client
certificate of the cluster's client CA (PEER_USER, system:masters, as K3s's kube-apiserver
client certificate) after authorizing the client ourselves. A peer never relays a peer's
request again, so a node no server holds is one 503, never a loop.

`post`, `websocket` and `streamed_get` are the servers' other calls to each other: the nodes'
reports they share (peerreports.py), a node's live MQTT tail (peertail.py) and a pod's log for
the dashboard (podlogs.py), with the same certificates. The streamed GETs (a followed log can
stay open for hours) have their own connections, at most MAX_STREAMED_GETS at once (429
beyond; the dashboard holds each user to fewer), so they never take the ones the reports and
tails need; TCP keepalive ends one whose peer died without a word (power lost, link cut)
within a minute."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import io
import logging
import socket
import ssl
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import web

from k3py.api import errors
from k3py.server.apiserver.auth import Authenticator, User
from k3py.server.controllers.apiendpoints import live_addresses
from k3py.server.quota import Quota
from k3py.server.registry import Registry

__all__ = ["PeerRelay", "PeerError", "PEER_USER", "PEER_GROUPS", "MAX_STREAMED_GETS"]

log = logging.getLogger("k3py.edge")

PEER_USER = "system:k3py-server"
PEER_GROUPS = ("system:masters",)
_HEAD_LIMIT = 64 * 1024
_CHUNK = 64 * 1024
_HIGH_WATER = 256 * 1024
# not forwarded: the client was authenticated and authorized here; the peer knows us by our
# certificate, and must not act on the client's credentials or impersonation
_DROPPED = ("authorization", "host", "cookie")
MAX_STREAMED_GETS = 64  # open at once from this server (the dashboard's followed logs)
# TCP keepalive of their connections: probed after KEEPALIVE_IDLE s of silence, then every
# KEEPALIVE_INTERVAL s, dropped after KEEPALIVE_PROBES unanswered (a dead peer: within 60 s)
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES = 30, 10, 3


def _keepalive_socket(addr_info) -> socket.socket:
    """A client socket whose connection the kernel probes when idle (aiohttp's socket_factory:
    a followed log of a quiet pod sends nothing for long, so no read timeout can tell)."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    return sock


class PeerError(Exception):
    """A peer could not be reached, or did not take a `post` (the message says why)."""


class NotThere(Exception):
    """The peer does not hold the node's tunnel either (it answered 503), or cannot be
    reached: ask the next one. Raised only before anything was sent to the client."""


class PeerRelay:
    """The live peers, and a request relayed to whichever of them holds a node; the
    servers' own endpoints (peerreports.py, peertail.py) admit a peer with `require_peer`."""

    def __init__(self, registry: Registry, tls: ssl.SSLContext, address: str, port: int,
                 authenticator: Authenticator) -> None:
        self.registry, self.tls, self.address, self.port = registry, tls, address, port
        self.authenticator = authenticator
        self._session: aiohttp.ClientSession | None = None
        self._stream_session: aiohttp.ClientSession | None = None
        self.streamed = Quota(  # streamed GETs open, for the whole server
            MAX_STREAMED_GETS, f"{MAX_STREAMED_GETS} logs are followed through the other "
            "servers already: close another log view first")

    @staticmethod
    def is_peer(user: User) -> bool:
        return user.name == PEER_USER

    def require_peer(self, request: web.Request, doing: str) -> User:
        """The peer a request of a servers-only endpoint is from: 401 without a credential,
        403 for anyone else (`doing` says what they cannot do)."""
        user = self.authenticator.require(request)
        if not self.is_peer(user):
            raise errors.forbidden(f'User "{user.name}" cannot {doing}: only the cluster\'s '
                                   "servers do")
        return user

    async def close(self) -> None:
        for session in (self._session, self._stream_session):
            if session is not None:
                await session.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        return self._session

    async def post(self, peer: str, path: str, body: bytes, timeout: float) -> None:
        """POST the JSON `body` to `path` on `peer`, within `timeout` seconds; PeerError
        unless it answers 2xx."""
        try:
            async with self._client().post(
                    self._url(peer, path), data=body, ssl=self.tls,
                    headers={"Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                if r.status >= 300:
                    raise PeerError(f"it answered {r.status}: {_message(await r.read())}")
        except (OSError, aiohttp.ClientError, TimeoutError) as e:
            raise PeerError(str(e) or type(e).__name__) from e

    async def peers(self) -> list[str]:
        """The advertise addresses of the other servers whose apiserver Lease is current."""
        return [a for a in await live_addresses(self.registry) if a != self.address]

    async def relay(self, request: web.Request, node: str) -> web.StreamResponse:
        """Serve `request` through the peer holding `node`'s tunnel; 503 when none does."""
        upgrade = bool(request.headers.get("Upgrade"))
        for peer in await self.peers():
            try:
                if upgrade:
                    return await self._relay_upgrade(request, peer)
                return await self._relay_plain(request, peer)
            except NotThere:
                continue
        raise errors.service_unavailable(f"node {node} is not connected to the server")

    async def websocket(self, path_qs: str, node: str, heartbeat: float
                        ) -> tuple[str, aiohttp.ClientWebSocketResponse]:
        """A websocket to `path_qs` (a peer-only endpoint) on the peer that holds `node`'s
        tunnel, and that peer: those answering 503 (or 404: an older server) or not reachable
        are passed over; 503 when none holds it. A peer's other refusal is a 429 (it is busy)
        or a 500 Status."""
        for peer in await self.peers():
            try:
                async with asyncio.timeout(10):
                    ws = await self._client().ws_connect(
                        self._url(peer, path_qs), ssl=self.tls, heartbeat=heartbeat,
                        timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
            except aiohttp.WSServerHandshakeError as e:
                if e.status in (503, 404):  # 404: a peer of an older version, without it
                    continue
                refused = f"server {peer} answered {e.status} to {path_qs.partition('?')[0]}"
                raise (errors.too_many_requests(refused) if e.status == 429
                       else errors.internal_error(refused)) from None
            except (OSError, aiohttp.ClientError, TimeoutError) as e:
                _unreachable(peer, e)
                continue
            return peer, ws
        raise errors.service_unavailable(f"node {node} is not connected to the server")

    @contextlib.asynccontextmanager
    async def streamed_get(self, path_qs: str, node: str
                           ) -> AsyncIterator[tuple[str, aiohttp.ClientResponse]]:
        """A streamed GET of `path_qs` (as PEER_USER) on the peer that holds `node`'s tunnel:
        (that peer, its response), closed on leaving. Peers answering 503 or not reachable are
        passed over; 503 when none holds it; another answer that is not 2xx raised as its
        Status; 429 when MAX_STREAMED_GETS are open already."""
        with self.streamed.hold():
            peer, response = await self._first_that_serves(path_qs, node)
            try:
                yield peer, response
            finally:
                response.close()

    async def _first_that_serves(self, path_qs: str, node: str
                                 ) -> tuple[str, aiohttp.ClientResponse]:
        if self._stream_session is None:
            self._stream_session = aiohttp.ClientSession(
                auto_decompress=False, connector=aiohttp.TCPConnector(
                    limit=MAX_STREAMED_GETS, socket_factory=_keepalive_socket))
        for peer in await self.peers():
            try:
                r = await self._stream_session.get(
                    self._url(peer, path_qs), ssl=self.tls,
                    timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10))
            except (OSError, aiohttp.ClientError) as e:
                _unreachable(peer, e)
                continue
            if r.status < 300:
                return peer, r
            try:
                body = await r.read()
            except (OSError, aiohttp.ClientError) as e:
                _unreachable(peer, e)
                continue
            finally:
                r.release()
            if r.status == 503:
                continue
            raise errors.StatusError(r.status, _reason(body), _message(body))
        raise errors.service_unavailable(f"node {node} is not connected to the server")

    def _url(self, peer: str, path_qs: str) -> str:
        host = f"[{peer}]" if ":" in peer else peer
        return f"https://{host}:{self.port}{path_qs}"

    @staticmethod
    def _headers(request: web.Request) -> list[tuple[str, str]]:
        return [(k, v) for k, v in request.headers.items()
                if k.lower() not in _DROPPED and not k.lower().startswith("impersonate-")]

    async def _relay_plain(self, request: web.Request, peer: str) -> web.StreamResponse:
        """pods/log: a streamed response, copied at the pace the client reads it."""
        try:
            r = await self._client().request(
                request.method, self._url(peer, request.path_qs), headers=self._headers(request),
                ssl=self.tls, timeout=aiohttp.ClientTimeout(total=None, connect=10))
        except (OSError, aiohttp.ClientError) as e:
            raise _unreachable(peer, e) from e
        async with r:
            if r.status == 503:
                raise NotThere
            resp = web.StreamResponse(status=r.status, headers={
                k: v for k, v in r.headers.items()
                if k.lower() in ("content-type", "cache-control")})
            await resp.prepare(request)
            async for chunk in r.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    async def _relay_upgrade(self, request: web.Request, peer: str) -> web.StreamResponse:
        """exec, attach, port-forward: the upgrade request goes to the peer as it came; its
        101 comes back, then the connection's bytes (websocket or SPDY frames) flow both
        ways unchanged."""
        try:
            async with asyncio.timeout(10):
                reader, writer = await asyncio.open_connection(
                    peer, self.port, ssl=self.tls, server_hostname=peer, limit=_HEAD_LIMIT)
        except (OSError, TimeoutError) as e:
            raise _unreachable(peer, e) from e
        try:
            head = f"{request.method} {request.path_qs} HTTP/1.1\r\nHost: {peer}:{self.port}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in self._headers(request))
            writer.write(head.encode("latin-1") + b"\r\n")
            try:
                async with asyncio.timeout(30):
                    status, headers = await _read_head(reader)
                body = b"" if status == 101 else \
                    await reader.readexactly(int(headers.get("Content-Length") or 0))
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError) as e:
                raise _unreachable(peer, e) from e
            if status != 101:
                if status == 503:
                    raise NotThere
                return web.Response(status=status, body=body,
                                    content_type=headers.get_content_type())
            resp = web.StreamResponse(status=101, headers={
                k: v for k, v in headers.items()
                if k.lower() not in ("date", "server", "content-length", "content-type")})
            resp.force_close()
            await _pipe(request, resp, reader, writer)
            return resp
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _message(body: bytes) -> str:
    """A Status answer's message, else the start of the answer."""
    with contextlib.suppress(ValueError, AttributeError):
        return str(orjson.loads(body).get("message"))
    return body[:200].decode("utf-8", "replace")


def _reason(body: bytes) -> str:
    """A Status answer's reason, else a generic one."""
    with contextlib.suppress(ValueError, AttributeError):
        return str(orjson.loads(body).get("reason") or "InternalError")
    return "InternalError"


def _unreachable(peer: str, e: BaseException) -> NotThere:
    log.warning("stream relay to server %s: %s", peer, e or type(e).__name__)
    return NotThere()


async def _read_head(reader: asyncio.StreamReader):
    raw = await reader.readuntil(b"\r\n\r\n")
    line, _, rest = raw.partition(b"\r\n")
    parts = line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise OSError(f"the peer answered {line[:80]!r}")
    return int(parts[1]), http.client.parse_headers(io.BytesIO(rest))


class _ToPeer:
    """Stands in for aiohttp's request parser once upgraded: the client's bytes go to the
    peer; the client is read no faster than the peer takes them."""

    def __init__(self, writer: asyncio.StreamWriter, client: asyncio.Transport) -> None:
        self.writer, self.client = writer, client
        self.eof = asyncio.Event()
        self._draining: asyncio.Task | None = None

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if not self.writer.is_closing():
            self.writer.write(bytes(data))
            if self.writer.transport.get_write_buffer_size() > _HIGH_WATER \
                    and self._draining is None:
                self.client.pause_reading()
                self._draining = asyncio.ensure_future(self._drain())
        return False, b""

    async def _drain(self) -> None:
        with contextlib.suppress(Exception):
            await self.writer.drain()
        self._draining = None
        if not self.client.is_closing():
            self.client.resume_reading()

    def feed_eof(self) -> None:
        self.eof.set()


async def _pipe(request: web.Request, resp: web.StreamResponse,
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    transport, protocol = request.transport, request.protocol
    if transport is None:
        return
    to_peer = _ToPeer(writer, transport)
    protocol.set_parser(to_peer)  # before the 101: the client may answer right away
    await resp.prepare(request)

    async def to_client() -> None:
        with contextlib.suppress(OSError):  # either side gone: the relay ends
            while data := await reader.read(_CHUNK):
                if transport.is_closing():
                    return
                transport.write(data)
                if transport.get_write_buffer_size() > _HIGH_WATER:
                    await protocol._drain_helper()  # noqa: SLF001 - aiohttp's own drain
    down = asyncio.ensure_future(to_client())
    up = asyncio.ensure_future(to_peer.eof.wait())
    try:
        await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (down, up):
            t.cancel()
        transport.close()
