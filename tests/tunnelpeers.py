"""The streams of a tunnel end that speaks the protocol from before tunnel features, written out
with the websocket library for the version-skew tests: an old server against the real agent
(tests/unit/agent/test_tunnel_old_server.py) and old agents against a real server
(tests/integration/test_tunnel_skew.py). Each test gives its end's link messages (keepalives,
resources) their own handling (`on_link`); no process is started here.

Two older forms: from before flow control (`counts` False: it never sends nor expects a credit
frame, and relays credit frames it gets as any other) and the release before features (8ad632f,
`counts` True: it names no features but flow-controls every stream whatever the request says:
at most a window goes until credit comes, what comes is granted back, and more than a window
in flight fails)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from k3py.tunnel import framing
from k3py.tunnel.flowcontrol import StreamWindow
from k3py.tunnel.message import GROUP_STREAM, Message, new_message, stream_frame
from k3py.tunnel.protocol import (
    FRAME_CREDIT,
    FRAME_DATA,
    content_credit,
    content_data,
    credit_content,
    data_content,
)

__all__ = ["CHUNK", "MIB", "OldTunnelEnd"]

MIB = 1 << 20
CHUNK = 64 * 1024  # the data frames' size


class OldTunnelEnd:
    """One end of a node's tunnel, its messages sent as from `source` (CLOUD or EDGE). Stream
    requests the other end sends land in `requests`, the frames of every stream in
    `streams[id]` as (operation, content)."""

    def __init__(self, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
                 source: str, counts: bool = False) -> None:
        self.ws, self.source, self.counts = ws, source, counts
        self.windows: dict[str, tuple[StreamWindow, StreamWindow]] = {}  # sending, receiving
        self.credit = asyncio.Event()
        self.requests: asyncio.Queue[Message] = asyncio.Queue()
        self.streams: dict[str, asyncio.Queue] = {}

    async def send(self, msg: Message) -> None:
        await self.ws.send_str(framing.encode(msg))

    async def on_link(self, msg: Message) -> None:
        """A message that is not a stream's (keepalive, resource, hello): the test's to handle."""

    async def read(self) -> None:
        """Every message until the websocket closes: streams' here, the rest to on_link."""
        async for frame in self.ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            msg = framing.decode(frame.data)
            if msg.route.group != GROUP_STREAM:
                await self.on_link(msg)
            elif not msg.header.parent_id:
                self._stream(msg.id)
                self.requests.put_nowait(msg)
            elif msg.route.operation == FRAME_CREDIT and self.counts:
                self._window(msg.header.parent_id)[0].granted(content_credit(msg.content))
                self.credit.set()
            else:
                self._stream(msg.header.parent_id).put_nowait(
                    (msg.route.operation, msg.content))

    def _stream(self, sid: str) -> asyncio.Queue:
        return self.streams.setdefault(sid, asyncio.Queue())

    def _window(self, sid: str) -> tuple[StreamWindow, StreamWindow]:
        return self.windows.setdefault(sid, (StreamWindow(), StreamWindow()))

    async def open(self, operation: str, content: dict) -> str:
        """A stream opened from this end: its id."""
        msg = new_message(source=self.source, group=GROUP_STREAM, operation=operation,
                          content=content)
        self._stream(msg.id)
        await self.send(msg)
        return msg.id

    async def send_bytes(self, sid: str, n: int) -> None:
        """`n` bytes down stream `sid` in CHUNK data frames (`counts`: within credit)."""
        sending = self._window(sid)[0]
        for _ in range(n // CHUNK):
            while self.counts and sending.room() < CHUNK:
                self.credit.clear()
                await self.credit.wait()
            sending.sent(CHUNK)
            await self.send(stream_frame(sid, FRAME_DATA, data_content(bytes(CHUNK)),
                                         source=self.source))

    async def receive_bytes(self, sid: str, n: int) -> None:
        """Read stream `sid` until `n` bytes came (`counts`: granted back as they come; credit
        frames this end does not count are skipped); any other frame fails."""
        queue = self._stream(sid)
        receiving = self._window(sid)[1]
        got = 0
        while got < n:
            op, content = await queue.get()
            if op == FRAME_CREDIT:
                continue
            assert op == FRAME_DATA, (op, content, got)
            data = content_data(content)
            got += len(data)
            if self.counts:
                assert receiving.sent(len(data)), f"more than a window on {sid}"
                if grant := receiving.consumed(len(data)):
                    await self.send(stream_frame(sid, FRAME_CREDIT, credit_content(grant),
                                                 source=self.source))
