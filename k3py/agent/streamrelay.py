"""A TCP connection relayed over a tunnel stream: port-forward and connect streams the server
opens (portforward.py, network/tunnelproxy.py's serve_connect), and the connect streams this
node opens itself (tunnelproxy.py's TunnelProxy); and a UDP flow over a connect stream, one
datagram per frame. Frames are protocol.py's FRAME_*; connect and port-forward streams are
flow controlled both ways (tunnel/flowcontrol.py) when the request says so (its `flow`: the
server and the agent at the other end speak it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from k3py.aio import wait_event
from k3py.tunnel.flowcontrol import StreamWindow, datagram_cost
from k3py.tunnel.message import EDGE, stream_frame
from k3py.tunnel.protocol import (
    FRAME_CLOSE,
    FRAME_CREDIT,
    FRAME_DATA,
    FRAME_DATA_CLOSE,
    FRAME_ERROR,
    FRAME_FLOW,
    content_credit,
    content_data,
    content_flow_off,
    credit_content,
    data_content,
    data_length,
)

if TYPE_CHECKING:
    from k3py.agent.edgehub import EdgeHub

__all__ = ["relay_stream", "relay_datagrams", "DatagramQueue"]

log = logging.getLogger("k3py.streams")

CHUNK = 65536


async def relay_stream(hub: EdgeHub, sid: str, inputs: asyncio.Queue,
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                       opened: bool = False, flow_control: bool = False) -> None:
    """Bytes between a TCP connection and tunnel stream `sid`: "data" frames both ways, the
    other side's "data-close" half-closes the connection. When the connection's side ends,
    a stream the server opened (port-forward, connect) sends "close"; one this node opened
    (`opened`: its queue also gets the server's "close" and "error") sends "data-close" and
    runs until the server ends it. The connection is closed on return.

    `flow_control` (connect and port-forward streams whose request says "flow"): at most a
    window of bytes goes out before the other end grants more ("credit" frames), and what
    comes in is granted back once written to the connection, so a slow reader on either side
    pauses the writer on the other. Without it (the server or the other node is older than
    tunnel features), or once a "flow" frame turns it off (the server: the other node is
    older), the stream is lenient (flowcontrol.py): what comes in is still granted back, an
    overrun does not end it, and the writer keeps to the window only once credit came."""
    sending, receiving = StreamWindow(), StreamWindow()
    strict = flow_control
    room = asyncio.Event()
    to_connection: asyncio.Queue = asyncio.Queue()  # at most a window of data, when controlled

    def send(op: str, content: Any = None) -> bool:
        return hub.send_live(stream_frame(sid, op, content, source=EDGE))

    async def dispatch() -> None:
        """The stream's frames: credit at once (a connection slow to take our data must not
        hold up the grants for the data we send), the rest in order to the connection."""
        nonlocal strict
        while True:
            op, content = await inputs.get()
            if op == FRAME_CREDIT:
                sending.credit(content_credit(content))
                room.set()
                continue
            if op == FRAME_FLOW:
                if content_flow_off(content):
                    strict = False
                    room.set()
                continue
            if op == FRAME_DATA and not receiving.sent(data_length(content)) and strict:
                log.warning("stream %s: the other end sent more than its window", sid)
                send(FRAME_ERROR, {"code": 502, "message": "more data than the stream's "
                                   "flow-control window"})
                op, content = FRAME_ERROR, None
            to_connection.put_nowait((op, content))
            if op in (FRAME_CLOSE, FRAME_ERROR):
                return

    async def inbound() -> None:
        while True:
            op, content = await to_connection.get()
            if op == FRAME_DATA:
                data = content_data(content)
                writer.write(data)
                await writer.drain()
                grant = receiving.consumed(len(data))
                if grant:
                    send(FRAME_CREDIT, credit_content(grant))
            elif op == FRAME_DATA_CLOSE and writer.can_write_eof():
                writer.write_eof()
            elif op in (FRAME_CLOSE, FRAME_ERROR):
                return

    async def outbound() -> bool:
        """True when the connection's side ended (EOF, reset), False when the link did."""
        with contextlib.suppress(ConnectionError):
            while True:
                size = CHUNK
                while sending.limits(strict) and not sending.room():
                    room.clear()
                    await room.wait()
                if sending.limits(strict):
                    size = min(size, sending.room())
                data = await reader.read(size)
                if not data:
                    break
                sending.sent(len(data))
                if not send(FRAME_DATA, data_content(data)):
                    return False
        return True
    pump_frames = asyncio.create_task(dispatch())
    pump_in = asyncio.create_task(inbound())
    pump_out = asyncio.create_task(outbound())
    try:
        done, _ = await asyncio.wait({pump_in, pump_out}, return_when=asyncio.FIRST_COMPLETED)
        if pump_out in done and pump_out.result():
            if not opened:
                send(FRAME_CLOSE)
            elif not reader.exception() and send(FRAME_DATA_CLOSE):
                await pump_in
    finally:
        for t in (pump_frames, pump_in, pump_out):
            t.cancel()
        await asyncio.gather(pump_frames, pump_in, pump_out, return_exceptions=True)
        writer.close()


async def relay_datagrams(hub: EdgeHub, sid: str, inputs: asyncio.Queue,
                          send_to: Callable[[bytes], None], received: asyncio.Queue, *,
                          idle: float, flow_control: bool = False) -> None:
    """Datagrams between a UDP socket and connect stream `sid`, one per "data" frame: the
    stream's go out through `send_to`, `received`'s go up. With `flow_control` (the request's
    "flow"), each datagram takes flowcontrol.datagram_cost of the window, what goes out is
    granted back at once, and what the window has no room for is dropped (a peer that does not
    keep up loses datagrams, as on a network, and nothing piles up); a "flow" frame may turn
    it off. Returns on the stream's close or error, or once no datagram passed either way for
    `idle` seconds."""
    sending = StreamWindow() if flow_control else None
    receiving = StreamWindow() if flow_control else None
    active = asyncio.Event()

    def send(op: str, content: Any = None) -> bool:
        return hub.send_live(stream_frame(sid, op, content, source=EDGE))

    async def from_tunnel() -> None:
        nonlocal sending, receiving
        while True:
            op, content = await inputs.get()
            if op == FRAME_CREDIT and sending is not None:
                sending.granted(content_credit(content))
            elif op == FRAME_FLOW and content_flow_off(content):
                sending = receiving = None
            elif op == FRAME_DATA:
                data = content_data(content)
                cost = datagram_cost(len(data))
                if receiving is not None and not receiving.sent(cost):
                    send(FRAME_ERROR, {"code": 502, "message": "more data than the stream's "
                                       "flow-control window"})
                    return
                send_to(data)
                active.set()
                grant = receiving.consumed(cost) if receiving is not None else 0
                if grant:
                    send(FRAME_CREDIT, credit_content(grant))
            elif op == FRAME_ERROR:  # e.g. the pod's node does not relay UDP (an older agent)
                log.warning("UDP flow %s ended: %s", sid, (content or {}).get("message")
                            if isinstance(content, dict) else content)
                return
            elif op == FRAME_CLOSE:
                return

    async def to_tunnel() -> None:
        while True:
            data = await received.get()
            active.set()
            if sending is not None:
                if sending.room() < datagram_cost(len(data)):
                    continue
                sending.sent(datagram_cost(len(data)))
            if not send(FRAME_DATA, data_content(data)):
                return

    async def until_idle() -> None:
        while True:
            active.clear()
            if not await wait_event(active, idle):
                return
    tasks = [asyncio.create_task(f()) for f in (from_tunnel, to_tunnel, until_idle)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class DatagramQueue(asyncio.DatagramProtocol):
    """A UDP socket's datagrams into a bounded queue (full: dropped, as a full socket buffer
    drops them), for relay_datagrams; `on_datagram(data, addr)` instead when given."""

    def __init__(self, queue: asyncio.Queue | None = None,
                 on_datagram: Callable[[bytes, tuple], None] | None = None) -> None:
        self.queue, self.on_datagram = queue, on_datagram

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if self.on_datagram is not None:
            self.on_datagram(data, addr)
        elif self.queue is not None and not self.queue.full():
            self.queue.put_nowait(data)
