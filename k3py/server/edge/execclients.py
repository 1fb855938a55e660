"""One exec/attach (remotecommand) client, whatever its transport: websocket (the channel
protocols of channels.py) or SPDY/3.1 v4 (one stream per role, over spdy.py/spdyconn.py).

Used by streams.py's exec and attach relay: client input goes to the node, the node's output
and the final Status come back to the client."""

from __future__ import annotations

import asyncio
import contextlib
import json

import orjson
from aiohttp import WSMsgType, web

from k3py.api import errors
from k3py.server.edge.channels import (
    CH_CLOSE,
    CH_ERROR,
    CH_RESIZE,
    CH_STDERR,
    CH_STDIN,
    CH_STDOUT,
    EXEC_PROTOCOLS,
    ChannelCodec,
)
from k3py.server.edge.spdy import SpdyStream
from k3py.server.edge.spdyconn import SpdyConnection, accept_spdy
from k3py.tunnel.protocol import (
    FRAME_RESIZE,
    FRAME_STDIN,
    FRAME_STDIN_CLOSE,
    data_content,
)

__all__ = ["RemoteCommandClient", "WsClient", "SpdyClient", "SPDY_EXEC_PROTOCOLS",
           "STREAM_WAIT"]

SPDY_EXEC_PROTOCOLS = ("v4.channel.k8s.io",)
STREAM_WAIT = 30.0  # seconds a SPDY client has to open the streams its query announced


class RemoteCommandClient:
    """One remotecommand client, whatever its transport."""

    response: web.StreamResponse

    async def ready(self) -> bool:
        return True

    async def pump(self, to_node) -> None:
        """Client input (stdin, resize, stdin-close) to the node, until the client is gone."""
        raise NotImplementedError

    async def output(self, fd: int, data: bytes) -> None:
        raise NotImplementedError

    async def finish(self, status: dict) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class WsClient(RemoteCommandClient):
    """remotecommand over websocket (see ChannelCodec); v5 adds the close channel (255)
    that half-closes stdin (kubectl cp needs it)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.response = self.ws = ws
        self.codec = ChannelCodec(ws.ws_protocol)

    @classmethod
    async def accept(cls, request: web.Request) -> WsClient:
        ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, heartbeat=30.0)
        await ws.prepare(request)
        return cls(ws)

    async def pump(self, to_node) -> None:
        async for frame in self.ws:
            if frame.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                continue
            decoded = self.codec.decode(frame.data)
            if decoded is None:
                continue
            ch, data = decoded
            if ch == CH_STDIN:
                if data:
                    to_node(FRAME_STDIN, data_content(data))
            elif ch == CH_RESIZE:
                with contextlib.suppress(ValueError):
                    size = orjson.loads(data)
                    if isinstance(size, dict):
                        to_node(FRAME_RESIZE, size)
            elif ch == CH_CLOSE and self.codec.v5 and data[:1] == bytes([CH_STDIN]):
                to_node(FRAME_STDIN_CLOSE, None)

    async def _send(self, ch: int, data: bytes) -> None:
        message = self.codec.encode(ch, data)
        if isinstance(message, str):
            await self.ws.send_str(message)
        else:
            await self.ws.send_bytes(message)

    async def output(self, fd: int, data: bytes) -> None:
        await self._send(CH_STDERR if fd == 2 else CH_STDOUT, data)

    async def finish(self, status: dict) -> None:
        body = self.codec.status(status)
        if body is not None:
            await self._send(CH_ERROR, body)

    async def close(self) -> None:
        await self.ws.close()


class SpdyClient(RemoteCommandClient):
    """remotecommand v4 over SPDY: one stream per role, named by its streamtype header;
    the Status goes on the error stream as JSON, then every stream is half-closed."""

    def __init__(self, expect: set[str]) -> None:
        self.expect = expect
        self.streams: dict[str, SpdyStream] = {}
        self.all_here = asyncio.Event()
        self.conn: SpdyConnection | None = None

    @classmethod
    async def accept(cls, request: web.Request, expect: set[str]) -> SpdyClient:
        self = cls(expect)
        self.conn = await accept_spdy(request, SPDY_EXEC_PROTOCOLS, self._on_stream)
        self.response = self.conn.response
        return self

    def _on_stream(self, st: SpdyStream) -> None:
        kind = st.headers.get("streamtype", "")
        if kind in self.expect and kind not in self.streams:
            self.streams[kind] = st
            if set(self.streams) >= self.expect:
                self.all_here.set()

    async def ready(self) -> bool:
        assert self.conn is not None
        waiter = asyncio.ensure_future(self.all_here.wait())
        closed = asyncio.ensure_future(self.conn.session.closed.wait())
        done, _ = await asyncio.wait({waiter, closed}, timeout=STREAM_WAIT,
                                     return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        closed.cancel()
        if self.all_here.is_set():
            return True
        if "error" in self.streams and not self.conn.session.closed.is_set():
            await self.finish(errors.bad_request(
                "timed out waiting for the client to create streams "
                f"{sorted(self.expect)}").stream_status())
        return False

    async def pump(self, to_node) -> None:
        assert self.conn is not None

        async def stdin() -> None:
            st = self.streams["stdin"]
            while data := await st.read():
                to_node(FRAME_STDIN, data_content(data))
            if not st.reset:
                to_node(FRAME_STDIN_CLOSE, None)

        async def resize() -> None:
            st, buf, dec = self.streams["resize"], "", json.JSONDecoder()
            while data := await st.read():
                buf += data.decode(errors="replace")
                while buf.strip():
                    try:
                        size, end = dec.raw_decode(buf.lstrip())
                    except ValueError:
                        break
                    buf = buf.lstrip()[end:]
                    if isinstance(size, dict):
                        to_node(FRAME_RESIZE, size)
        tasks = [asyncio.create_task(f()) for name, f in (("stdin", stdin), ("resize", resize))
                 if name in self.streams]
        try:
            await self.conn.session.closed.wait()
        finally:
            for t in tasks:
                t.cancel()

    async def output(self, fd: int, data: bytes) -> None:
        st = self.streams.get("stderr" if fd == 2 else "stdout") or self.streams.get("stdout")
        if st is not None:
            with contextlib.suppress(ConnectionError):
                await st.write(data)

    async def finish(self, status: dict) -> None:
        with contextlib.suppress(ConnectionError):
            for kind in ("stdout", "stderr"):
                if kind in self.streams:
                    await self.streams[kind].close()
            err = self.streams.get("error")
            if err is not None:
                await err.write(orjson.dumps(status))
                await err.close()

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
