"""A TCP connection relayed over a tunnel stream: port-forward and connect streams the server
opens (portforward.py, network/tunnelproxy.py's serve_connect), and the connect streams this
node opens itself (tunnelproxy.py's TunnelProxy). Frames are protocol.py's FRAME_*."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from k3py.tunnel.message import EDGE, stream_frame
from k3py.tunnel.protocol import (
    FRAME_CLOSE,
    FRAME_DATA,
    FRAME_DATA_CLOSE,
    FRAME_ERROR,
    content_data,
    data_content,
)

if TYPE_CHECKING:
    from k3py.agent.edgehub import EdgeHub

__all__ = ["relay_stream"]


async def relay_stream(hub: EdgeHub, sid: str, inputs: asyncio.Queue,
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                       opened: bool = False) -> None:
    """Bytes between a TCP connection and tunnel stream `sid`: "data" frames both ways, the
    other side's "data-close" half-closes the connection. When the connection's side ends,
    a stream the server opened (port-forward, connect) sends "close"; one this node opened
    (`opened`: its queue also gets the server's "close" and "error") sends "data-close" and
    runs until the server ends it. The connection is closed on return."""
    async def inbound() -> None:
        while True:
            op, content = await inputs.get()
            if op == FRAME_DATA:
                writer.write(content_data(content))
                await writer.drain()
            elif op == FRAME_DATA_CLOSE and writer.can_write_eof():
                writer.write_eof()
            elif op in (FRAME_CLOSE, FRAME_ERROR):
                return

    async def outbound() -> bool:
        """True when the connection's side ended (EOF, reset), False when the link did."""
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if not hub.send_live(stream_frame(sid, FRAME_DATA, data_content(data),
                                                  source=EDGE)):
                    return False
        return True
    pump_in = asyncio.create_task(inbound())
    pump_out = asyncio.create_task(outbound())
    try:
        done, _ = await asyncio.wait({pump_in, pump_out}, return_when=asyncio.FIRST_COMPLETED)
        if pump_out in done and pump_out.result():
            if not opened:
                hub.send_live(stream_frame(sid, FRAME_CLOSE, source=EDGE))
            elif not reader.exception() and \
                    hub.send_live(stream_frame(sid, FRAME_DATA_CLOSE, source=EDGE)):
                await pump_in
    finally:
        for t in (pump_in, pump_out):
            t.cancel()
        await asyncio.gather(pump_in, pump_out, return_exceptions=True)
        writer.close()
