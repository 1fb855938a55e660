"""Accepting a SPDY/3.1 session on an aiohttp request, either way kubectl asks for one:

- a plain HTTP upgrade (`Upgrade: SPDY/3.1`, X-Stream-Protocol-Version offers): answered 101,
  then the raw connection carries SPDY frames (aiohttp hands us its bytes as a payload parser);
- a websocket whose subprotocol is "SPDY/3.1+<protocol>" (kubectl >= 1.31 port-forward): the
  binary messages carry the SPDY byte stream."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSMsgType, web

from k3py.api import errors
from k3py.server.edge.spdy import SpdySession, StreamCallback

__all__ = ["SpdyConnection", "accept_spdy", "wants_websocket", "wants_spdy"]

WS_SPDY_PREFIX = "SPDY/3.1+"
_HIGH_WATER = 256 * 1024


def wants_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def wants_spdy(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower().startswith("spdy/3")


def _offered(request: web.Request, header: str) -> list[str]:
    out = []
    for value in request.headers.getall(header, []):
        out += [v.strip() for v in value.split(",") if v.strip()]
    return out


def negotiate(request: web.Request, protocols: tuple[str, ...]) -> str:
    """The first of our protocols the client offers in X-Stream-Protocol-Version."""
    offered = _offered(request, "X-Stream-Protocol-Version")
    for p in protocols:
        if p in offered:
            return p
    raise errors.StatusError(403, "Forbidden",
                             f"unable to upgrade: unable to negotiate protocol: client "
                             f"supports {offered}, server accepts {list(protocols)}")


class _Feeder:
    """Stands in for aiohttp's websocket reader on the upgraded connection."""

    def __init__(self, session: SpdySession) -> None:
        self.session = session

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.session.feed(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self.session.feed_eof()


class SpdyConnection:
    """An accepted session and how to end it."""

    def __init__(self, session: SpdySession, response: web.StreamResponse, protocol: str,
                 closer) -> None:
        self.session, self.response, self.protocol = session, response, protocol
        self._closer = closer

    async def close(self, *, linger: float = 5.0) -> None:
        """GOAWAY, give the client `linger` seconds to hang up itself (closing first would
        risk a TCP reset eating data it has not read yet), then close."""
        await self.session.goaway()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.session.closed.wait(), linger)
        await self._closer()


async def accept_spdy(request: web.Request, protocols: tuple[str, ...],
                      on_stream: StreamCallback) -> SpdyConnection:
    """Upgrade `request` to a SPDY session speaking one of `protocols`; StatusError (before
    anything is sent) when the request is not an upgrade we can serve."""
    if wants_websocket(request):
        offered = _offered(request, "Sec-WebSocket-Protocol")
        wanted = [WS_SPDY_PREFIX + p for p in protocols]
        chosen = next((p for p in wanted if p in offered), None)
        if chosen is None:
            raise errors.bad_request(f"unable to upgrade: the websocket subprotocol must be "
                                     f"one of {wanted}, not {offered}")
        ws = web.WebSocketResponse(protocols=(chosen,), heartbeat=30.0,
                                   max_msg_size=16 * 1024 * 1024)

        async def send_ws(data: bytes) -> None:
            await ws.send_bytes(data)
        session = SpdySession(send_ws, on_stream)
        await ws.prepare(request)

        async def read_ws() -> None:
            try:
                async for msg in ws:
                    if msg.type == WSMsgType.BINARY:
                        session.feed(msg.data)
            finally:
                session.feed_eof()
        reader = asyncio.create_task(read_ws())

        async def close_ws() -> None:
            await ws.close()
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        return SpdyConnection(session, ws, chosen[len(WS_SPDY_PREFIX):], close_ws)

    if not wants_spdy(request):
        raise errors.bad_request("Upgrade request required (SPDY/3.1 or websocket)")
    chosen = negotiate(request, protocols)
    transport = request.transport
    protocol = request.protocol
    if transport is None:
        raise errors.bad_request("the connection is gone")

    async def send_raw(data: bytes) -> None:
        if transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        transport.write(data)
        if transport.get_write_buffer_size() > _HIGH_WATER:
            await protocol._drain_helper()  # noqa: SLF001 - aiohttp's own drain (websockets)
    session = SpdySession(send_raw, on_stream)
    resp = web.StreamResponse(status=101, headers={
        "Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": chosen})
    resp.force_close()
    protocol.set_parser(_Feeder(session))  # before the 101: the client answers right away
    await resp.prepare(request)

    async def close_raw() -> None:
        session.feed_eof()
        transport.close()
    return SpdyConnection(session, resp, chosen, close_raw)
