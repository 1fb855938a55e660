"""pods/portforward on the API side: SPDY/3.1 (raw or tunneled in a websocket) and the
websocket channel protocol, each forwarded connection one "portforward" stream to the agent.

Called through streams.install; reads targets and frames with streamrelay.py, accepts SPDY
with spdyconn.py; the agent's end is k3py/agent/portforward.py."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

from aiohttp import WSMsgType, web

from k3py.api import errors
from k3py.server.apiserver.auth import User
from k3py.server.apiserver.paths import ResourcePath
from k3py.server.edge.cloudhub import CloudHub
from k3py.server.edge.spdy import SpdyStream
from k3py.server.edge.spdyconn import accept_spdy, wants_websocket
from k3py.server.edge.streamrelay import next_frame, stream_target
from k3py.tunnel.message import CLOUD, stream_frame
from k3py.tunnel.protocol import (
    FRAME_CLOSE,
    FRAME_DATA,
    FRAME_DATA_CLOSE,
    FRAME_ERROR,
    STREAM_PORTFORWARD,
    PortForwardRequest,
    content_data,
    data_content,
)

__all__ = ["serve_portforward", "PORTFORWARD_PROTOCOL"]

PORTFORWARD_PROTOCOL = "portforward.k8s.io"


async def serve_portforward(hub: CloudHub, request: web.Request, rp: ResourcePath,
                            user: User) -> web.StreamResponse:
    """pods/<name>/portforward (portforward.k8s.io over SPDY): per forwarded connection the
    client opens an error and a data stream sharing a requestid; each pair becomes one
    "portforward" tunnel stream to the agent, which connects to the port inside the pod."""
    pod, node = await stream_target(hub, rp, "port-forward to")
    base = PortForwardRequest(namespace=rp.namespace or "", pod=rp.name or "",
                              uid=pod["metadata"]["uid"])
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    if wants_websocket(request) and "SPDY/3.1+" not in offered:
        return await _serve_ws_portforward(hub, request, node, base)
    pairs: dict[str, dict[str, SpdyStream]] = {}
    tasks: set[asyncio.Task] = set()

    def on_stream(st: SpdyStream) -> None:
        rid = st.headers.get("requestid") or st.headers.get("port", "")
        kind = st.headers.get("streamtype", "")
        if kind not in ("error", "data"):
            asyncio.ensure_future(st.rst())
            return
        pair = pairs.setdefault(rid, {})
        pair[kind] = st
        if len(pair) == 2:
            del pairs[rid]
            task = asyncio.create_task(_forward(hub, node, base, pair["error"], pair["data"]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    conn = await accept_spdy(request, (PORTFORWARD_PROTOCOL,), on_stream)
    try:
        await conn.session.closed.wait()
    finally:
        for t in list(tasks):
            t.cancel()
        await conn.close(linger=0)
    return conn.response


async def _forward(hub: CloudHub, node: str, base: PortForwardRequest, err: SpdyStream,
                   data: SpdyStream) -> None:
    """One forwarded connection: bytes both ways, failures as text on the error stream."""
    port_s = data.headers.get("port", "")
    try:
        port = int(port_s)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        await _forward_error(err, data, f'invalid port "{port_s}"')
        return
    try:
        session, stream_id, queue = await hub.open_stream(
            node, STREAM_PORTFORWARD, replace(base, port=port).to_content())
    except errors.StatusError as e:
        await _forward_error(err, data, e.message)
        return

    async def upstream() -> None:
        while chunk := await data.read():
            session.send_live(stream_frame(stream_id, FRAME_DATA, data_content(chunk),
                                           source=CLOUD))
        if not data.reset:
            session.send_live(stream_frame(stream_id, FRAME_DATA_CLOSE, source=CLOUD))
            await asyncio.Event().wait()  # half-closed: keep relaying the other way
    up = asyncio.create_task(upstream())
    try:
        while True:
            frame = await next_frame(queue, up)
            if frame is None:
                return  # the client reset the stream or left
            kind, content = frame
            if kind == FRAME_DATA:
                await data.write(content_data(content))
            elif kind == FRAME_ERROR:
                msg = content.get("message") or "port-forward failed"
                await _forward_error(err, data, f"error forwarding port {port} to pod "
                                     f"{base.pod}, uid {base.uid}: {msg}")
                return
            elif kind == FRAME_CLOSE:
                return
    except ConnectionError:
        return
    finally:
        up.cancel()
        await hub.close_stream(session, stream_id)
        with contextlib.suppress(ConnectionError):
            await data.close()
            await err.close()


async def _serve_ws_portforward(hub: CloudHub, request: web.Request, node: str,
                                base: PortForwardRequest) -> web.StreamResponse:
    """The websocket port-forward protocol (v4.channel.k8s.io; the Python client's): the
    ports come in the query, port i has data channel 2i and error channel 2i+1, each opened
    by a frame holding the port (2 bytes, little endian). One connection per port; the
    websocket closes when every port's connection ended."""
    ports: list[int] = []
    for value in request.query.getall("ports", []):
        for p in value.split(","):
            try:
                port = int(p)
            except ValueError:
                raise errors.bad_request(f'invalid port "{p}"') from None
            if not 0 < port < 65536:
                raise errors.bad_request(f'invalid port "{p}"')
            ports.append(port)
    if not ports:
        raise errors.bad_request("query parameter \"ports\" is required")
    ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io",), heartbeat=30.0)
    await ws.prepare(request)
    opened = []
    try:
        for i, port in enumerate(ports):
            prefix = port.to_bytes(2, "little")
            await ws.send_bytes(bytes([2 * i]) + prefix)
            await ws.send_bytes(bytes([2 * i + 1]) + prefix)
            try:
                opened.append(await hub.open_stream(node, STREAM_PORTFORWARD,
                                                    replace(base, port=port).to_content()))
            except errors.StatusError as e:
                await ws.send_bytes(bytes([2 * i + 1]) + e.message.encode())
                opened.append(None)

        async def from_client() -> None:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    continue
                ch = msg.data[0]
                if ch % 2 == 0 and ch // 2 < len(opened) and opened[ch // 2] is not None:
                    session, stream_id, _ = opened[ch // 2]
                    session.send_live(stream_frame(stream_id, FRAME_DATA,
                                                   data_content(msg.data[1:]), source=CLOUD))

        async def to_client(i: int, queue: asyncio.Queue) -> None:
            while True:
                kind, content = await next_frame(queue)
                if kind == FRAME_DATA:
                    await ws.send_bytes(bytes([2 * i]) +
                                        content_data(content))
                elif kind == FRAME_ERROR:
                    await ws.send_bytes(bytes([2 * i + 1]) + (
                        f"error forwarding port {ports[i]} to pod {base.pod}, uid "
                        f"{base.uid}: {content.get('message')}").encode())
                    return
                elif kind == FRAME_CLOSE:
                    return
        reader = asyncio.create_task(from_client())
        pumps = [asyncio.create_task(to_client(i, o[2])) for i, o in enumerate(opened)
                 if o is not None]
        try:
            if pumps:
                await asyncio.wait({reader, asyncio.ensure_future(asyncio.gather(*pumps))},
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (reader, *pumps):
                t.cancel()
    finally:
        for o in opened:
            if o is not None:
                await hub.close_stream(o[0], o[1])
        await ws.close()
    return ws


async def _forward_error(err: SpdyStream, data: SpdyStream, message: str) -> None:
    with contextlib.suppress(ConnectionError):
        await err.write(message.encode())
        await err.close()
        await data.close()
