"""A deadline for a connection's first request headers, as kube-apiserver's 32 s
ReadHeaderTimeout: a client that opens a connection (TLS handshake done) and then sends its
request line and headers slowly, or never, is cut off when the deadline passes, so thousands
of such connections (slowloris) cannot hold the server's file descriptors forever.

aiohttp has no such timeout of its own. `HeaderDeadline.factory` wraps the server's protocol
factory: each new connection arms a timer; the first request that reaches the app (its
headers are parsed) disarms it through `middleware`. Later requests on a kept-alive
connection are bounded by aiohttp's keep-alive timeout. `DeadlineSite` is aiohttp's TCPSite
listening through that factory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web

__all__ = ["HEADER_TIMEOUT", "DeadlineSite", "HeaderDeadline"]

HEADER_TIMEOUT = 32.0  # upstream's ReadHeaderTimeout


class HeaderDeadline:
    def __init__(self, timeout: float = HEADER_TIMEOUT) -> None:
        self.timeout = timeout
        self.expired = 0  # connections cut off so far
        self._timers: dict[asyncio.BaseTransport, asyncio.TimerHandle] = {}

    def factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory: `make()`'s protocol behind a _Guarded one that arms the deadline
        when its connection is made and drops it when the connection is lost."""
        return lambda: _Guarded(make(), self)

    def middleware(self):
        @web.middleware
        async def header_deadline(request: web.Request, handler) -> web.StreamResponse:
            if request.transport is not None:
                self._disarm(request.transport)
            return await handler(request)
        return header_deadline

    @property
    def armed(self) -> int:
        return len(self._timers)

    def _arm(self, transport: asyncio.BaseTransport) -> None:
        self._timers[transport] = asyncio.get_running_loop().call_later(
            self.timeout, self._expire, transport)

    def _disarm(self, transport: asyncio.BaseTransport) -> None:
        timer = self._timers.pop(transport, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        if self._timers.pop(transport, None) is not None:
            self.expired += 1
            transport.abort()


class _Guarded(asyncio.Protocol):
    """Forwards every protocol call to `inner` (aiohttp's request handler, whose slots leave
    no room for hooks of its own), arming and dropping the deadline around the connection."""

    def __init__(self, inner: asyncio.Protocol, deadline: HeaderDeadline) -> None:
        self._inner = inner
        self._deadline = deadline
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._inner.connection_made(transport)
        self._deadline._arm(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._deadline._disarm(self._transport)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class DeadlineSite(web.TCPSite):
    """web.TCPSite whose connections get `deadline`'s header timeout."""

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, *,
                 deadline: HeaderDeadline, **kwargs) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._deadline = deadline

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        if server is None:
            raise RuntimeError("the runner is not set up")
        self._server = await asyncio.get_running_loop().create_server(
            self._deadline.factory(server), self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, reuse_address=self._reuse_address,
            reuse_port=self._reuse_port)
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
