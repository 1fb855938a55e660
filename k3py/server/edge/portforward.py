"""pods/portforward on the API side: SPDY/3.1 (raw or tunneled in a websocket) and the
websocket channel protocol, each forwarded connection one "portforward" stream to the agent.

Called through streams.install; reads targets and frames with streamrelay.py, accepts SPDY
with spdyconn.py; the agent's end is k3py/agent/portforward.py. Each tunnel stream to an agent
that speaks flow control is flow controlled both ways (tunnel/flowcontrol.py, as connect
streams), so a slow client pauses the pod's writes instead of growing this server's or the
agent's queues; to an older agent the stream is lenient (flowcontrol.py): credit is granted
to it all the same (the release before features counts windows and waits for it), bytes go
to it as they come until it sends credit, and an overrun from it does not end the stream."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

from aiohttp import WSMsgType, web

from k3py.api import errors
from k3py.server.apiserver.auth import User
from k3py.server.apiserver.paths import ResourcePath
from k3py.server.edge.cloudhub import CloudHub, NodeSession
from k3py.server.edge.spdy import SpdyStream
from k3py.server.edge.spdyconn import accept_spdy, wants_websocket
from k3py.server.edge.streamrelay import next_frame, stream_target
from k3py.tunnel.flowcontrol import StreamWindow
from k3py.tunnel.message import CLOUD, stream_frame
from k3py.tunnel.protocol import (
    FEATURE_FLOW_CONTROL,
    FRAME_CLOSE,
    FRAME_CREDIT,
    FRAME_DATA,
    FRAME_DATA_CLOSE,
    FRAME_ERROR,
    STREAM_PORTFORWARD,
    PortForwardRequest,
    content_credit,
    content_data,
    credit_content,
    data_content,
    data_length,
)

__all__ = ["serve_portforward", "PORTFORWARD_PROTOCOL"]

PORTFORWARD_PROTOCOL = "portforward.k8s.io"


class _Flow:
    """One port-forward tunnel stream's flow control, server side: `send` puts client bytes
    in "data" frames within the node's credit; `frames` gets the node's frames once credit
    is taken out (at once, so a client slow to read does not hold up the node's grants) and
    a node that overruns its window turned into an error; `handed_on` grants back what went
    to the client. With `strict` False (an agent older than tunnel features) the stream is
    lenient: credit is granted all the same, an overrun is no error, and `send` keeps to
    the window only once the node sent credit."""

    def __init__(self, session, stream_id: str, queue: asyncio.Queue, strict: bool) -> None:
        self.session, self.stream_id = session, stream_id
        self.strict = strict
        self.sending, self.receiving = StreamWindow(), StreamWindow()
        self.room = asyncio.Event()
        self.ended = False  # the node closed or failed the stream: client bytes are dropped
        self.frames: asyncio.Queue = asyncio.Queue()  # at most a window of data
        self._dispatch = asyncio.create_task(self._run(queue))

    async def _run(self, queue: asyncio.Queue) -> None:
        while True:
            kind, content = await next_frame(queue)
            if kind == FRAME_CREDIT:
                self.sending.credit(content_credit(content))
                self.room.set()
                continue
            if kind == FRAME_DATA and not self.receiving.sent(data_length(content)) and \
                    self.strict:
                kind, content = FRAME_ERROR, {"message": "the node sent more than the "
                                              "stream's flow-control window"}
            self.frames.put_nowait((kind, content))
            if kind in (FRAME_CLOSE, FRAME_ERROR):
                self.ended = True
                self.room.set()  # a send waiting for credit gives up instead of waiting forever
                return

    def _send(self, kind: str, content: dict | None = None) -> bool:
        return self.session.send_live(stream_frame(self.stream_id, kind, content,
                                                   source=CLOUD))

    async def send(self, chunk: bytes) -> bool:
        """Client bytes to the node, waiting for credit; False once the link is gone or the
        node ended the stream (the bytes are dropped then)."""
        if not self.sending.limits(self.strict):
            self.sending.sent(len(chunk))
            return not self.ended and self._send(FRAME_DATA, data_content(chunk))
        view = memoryview(chunk)
        while view:
            while not self.sending.room():
                if self.ended:
                    return False
                self.room.clear()
                await self.room.wait()
            if self.ended:
                return False
            n = min(len(view), self.sending.room())
            self.sending.sent(n)
            if not self._send(FRAME_DATA, data_content(bytes(view[:n]))):
                return False
            view = view[n:]
        return True

    def handed_on(self, n: int) -> None:
        grant = self.receiving.consumed(n)
        if grant:
            self._send(FRAME_CREDIT, credit_content(grant))

    def close(self) -> None:
        self._dispatch.cancel()


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
        opened = await _open(hub, node, replace(base, port=port))
    except errors.StatusError as e:
        await _forward_error(err, data, e.message)
        return
    flow = _Flow(*opened)
    session, stream_id = flow.session, flow.stream_id

    async def upstream() -> None:
        while chunk := await data.read():
            if not await flow.send(chunk):
                return
        if not data.reset:
            session.send_live(stream_frame(stream_id, FRAME_DATA_CLOSE, source=CLOUD))
            await asyncio.Event().wait()  # half-closed: keep relaying the other way
    up = asyncio.create_task(upstream())
    try:
        while True:
            frame = await next_frame(flow.frames, up)
            if frame is None:
                return  # the client reset the stream or left
            kind, content = frame
            if kind == FRAME_DATA:
                chunk = content_data(content)
                await data.write(chunk)
                flow.handed_on(len(chunk))
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
        flow.close()
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
    flows: list[_Flow | None] = []
    try:
        for i, port in enumerate(ports):
            prefix = port.to_bytes(2, "little")
            await ws.send_bytes(bytes([2 * i]) + prefix)
            await ws.send_bytes(bytes([2 * i + 1]) + prefix)
            try:
                flows.append(_Flow(*await _open(hub, node, replace(base, port=port))))
            except errors.StatusError as e:
                await ws.send_bytes(bytes([2 * i + 1]) + e.message.encode())
                flows.append(None)

        async def from_client() -> None:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    continue
                ch = msg.data[0]
                flow = flows[ch // 2] if ch % 2 == 0 and ch // 2 < len(flows) else None
                if flow is not None:
                    await flow.send(msg.data[1:])

        async def to_client(i: int, flow: _Flow) -> None:
            while True:
                kind, content = await next_frame(flow.frames)
                if kind == FRAME_DATA:
                    chunk = content_data(content)
                    await ws.send_bytes(bytes([2 * i]) + chunk)
                    flow.handed_on(len(chunk))
                elif kind == FRAME_ERROR:
                    await ws.send_bytes(bytes([2 * i + 1]) + (
                        f"error forwarding port {ports[i]} to pod {base.pod}, uid "
                        f"{base.uid}: {content.get('message')}").encode())
                    return
                elif kind == FRAME_CLOSE:
                    return
        reader = asyncio.create_task(from_client())
        pumps = [asyncio.create_task(to_client(i, f)) for i, f in enumerate(flows)
                 if f is not None]
        try:
            if pumps:
                await asyncio.wait({reader, asyncio.ensure_future(asyncio.gather(*pumps))},
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (reader, *pumps):
                t.cancel()
    finally:
        for f in flows:
            if f is not None:
                f.close()
                await hub.close_stream(f.session, f.stream_id)
        await ws.close()
    return ws


async def _open(hub: CloudHub, node: str, request: PortForwardRequest
                ) -> tuple[NodeSession, str, asyncio.Queue, bool]:
    """A port-forward stream on `node`'s tunnel, flow controlled if its agent speaks it:
    (session, stream id, the node's frames, whether strictly flow controlled)."""
    session = hub.sessions.get(node)
    flow = session is not None and session.speaks(FEATURE_FLOW_CONTROL)
    opened = await hub.open_stream(node, STREAM_PORTFORWARD,
                                   replace(request, flow=flow).to_content())
    return (*opened, flow)


async def _forward_error(err: SpdyStream, data: SpdyStream, message: str) -> None:
    with contextlib.suppress(ConnectionError):
        await err.write(message.encode())
        await err.close()
        await data.close()
