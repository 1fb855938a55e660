"""Pod streams served through a node's tunnel: pods/log, pods/exec and pods/attach (the
remotecommand protocol over websocket v5/v4 or SPDY/3.1 v4) and pods/portforward (SPDY/3.1,
raw or tunneled in a websocket), relayed to the node's agent as GROUP_STREAM frames."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from dataclasses import replace

import orjson
from aiohttp import WSMsgType, web

from k3py.api import errors
from k3py.server.apiserver.auth import User
from k3py.server.apiserver.paths import ResourcePath
from k3py.server.edge.cloudhub import CloudHub
from k3py.server.edge.downstream import node_of
from k3py.server.edge.spdy import SpdyStream
from k3py.server.edge.spdyconn import SpdyConnection, accept_spdy, wants_spdy, wants_websocket
from k3py.tunnel.message import CLOUD, stream_frame
from k3py.tunnel.protocol import (
    FRAME_CLOSE,
    FRAME_DATA,
    FRAME_DATA_CLOSE,
    FRAME_ERROR,
    FRAME_EXIT,
    FRAME_RESIZE,
    FRAME_STDIN,
    FRAME_STDIN_CLOSE,
    STREAM_ATTACH,
    STREAM_EXEC,
    STREAM_LOG,
    STREAM_PORTFORWARD,
    ExecRequest,
    LogRequest,
    PortForwardRequest,
    content_data,
    data_content,
)

__all__ = ["serve_log", "serve_exec", "serve_attach", "serve_portforward", "EXEC_PROTOCOLS",
           "install", "ChannelCodec"]

# the Kubernetes remotecommand websocket protocols, as kube-apiserver (v5) and the kubelet
# (the rest) accept them; kubectl >= 1.30 offers v5 first. The base64 ones send text frames:
# the channel as an ASCII digit, then the payload in base64. "" is a client that named none.
V5_PROTOCOL, V4_PROTOCOL = "v5.channel.k8s.io", "v4.channel.k8s.io"
V4_BASE64_PROTOCOL = "v4.base64.channel.k8s.io"
PRE_V4_PROTOCOL, PRE_V4_BASE64_PROTOCOL = "channel.k8s.io", "base64.channel.k8s.io"
EXEC_PROTOCOLS = (V5_PROTOCOL, V4_PROTOCOL, V4_BASE64_PROTOCOL, PRE_V4_PROTOCOL,
                  PRE_V4_BASE64_PROTOCOL)
_BASE64_PROTOCOLS = (V4_BASE64_PROTOCOL, PRE_V4_BASE64_PROTOCOL)
_STATUS_JSON_PROTOCOLS = (V5_PROTOCOL, V4_PROTOCOL, V4_BASE64_PROTOCOL)
CH_STDIN, CH_STDOUT, CH_STDERR, CH_ERROR, CH_RESIZE, CH_CLOSE = 0, 1, 2, 3, 4, 255

def install(api, hub: CloudHub) -> None:
    """Register the stream subresources on the API server."""
    api.streams["log"] = lambda request, rp, user: serve_log(hub, request, rp, user)
    api.streams["exec"] = lambda request, rp, user: serve_exec(hub, request, rp, user)
    api.streams["attach"] = lambda request, rp, user: serve_attach(hub, request, rp, user)
    api.streams["portforward"] = (
        lambda request, rp, user: serve_portforward(hub, request, rp, user))


async def _next_frame(queue: asyncio.Queue, until: asyncio.Future | None = None
                      ) -> tuple[str, dict] | None:
    """The node's next frame on a stream as (kind, content dict), or None when `until` (the
    client's side of the relay) ends first."""
    if until is None:
        kind, content = await queue.get()
    else:
        getter = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait({getter, until}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            return None
        kind, content = getter.result()
    return kind, content if isinstance(content, dict) else {"message": str(content)}


async def _scheduled_pod(hub: CloudHub, rp: ResourcePath) -> tuple[dict, str]:
    """The pod and its node: 404 without the pod, 400 while it is not scheduled."""
    pod = await hub.registry.get(hub.registry.served("", "pods"), rp.namespace, rp.name or "")
    node = node_of(pod)
    if not node:
        raise errors.bad_request(f'pod "{rp.name}" is not scheduled to a node yet')
    return pod, node


async def serve_log(hub: CloudHub, request: web.Request, rp: ResourcePath,
                    user: User) -> web.StreamResponse:
    """GET pods/<name>/log: relayed from the node's runtime through the tunnel."""
    pod, node = await _scheduled_pod(hub, rp)
    q = request.query
    containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    container = q.get("container") or (containers[0] if len(containers) == 1 else "")
    if not container:
        raise errors.bad_request(
            f"a container name must be specified for pod {rp.name}, choose one of: "
            f"[{' '.join(containers)}]")
    params = LogRequest(
        namespace=rp.namespace or "", pod=rp.name or "", uid=pod["metadata"]["uid"],
        container=container, follow=q.get("follow") == "true", tail_lines=q.get("tailLines"),
        since_seconds=q.get("sinceSeconds"), since_time=q.get("sinceTime"),
        timestamps=q.get("timestamps") == "true", previous=q.get("previous") == "true",
        limit_bytes=q.get("limitBytes"))
    session, stream_id, queue = await hub.open_stream(node, STREAM_LOG, params.to_content())
    resp: web.StreamResponse | None = None
    try:
        while True:
            kind, content = await _next_frame(queue)
            if kind == FRAME_ERROR:
                if resp is None:
                    raise errors.StatusError(int(content.get("code") or 500),
                                             content.get("reason") or "InternalError",
                                             content.get("message") or "log stream failed")
                break
            if resp is None:
                resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
                await resp.prepare(request)
            if kind == FRAME_CLOSE:
                break
            if kind == FRAME_DATA:
                await resp.write(content_data(content))
    finally:
        await hub.close_stream(session, stream_id)
    if resp is None:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
    await resp.write_eof()
    return resp

SPDY_EXEC_PROTOCOLS = ("v4.channel.k8s.io",)
PORTFORWARD_PROTOCOL = "portforward.k8s.io"
STREAM_WAIT = 30.0  # seconds a SPDY client has to open the streams its query announced


def _true(q, key: str, default: bool = False) -> bool:
    v = q.get(key)
    return default if v is None else v.lower() in ("true", "1")


async def _stream_target(hub: CloudHub, rp: ResourcePath, what: str) -> tuple[dict, str]:
    """The pod and its node, or the Status a kubelet/apiserver would answer: 404 no pod,
    400 not scheduled / completed, 503 node not connected."""
    pod, node = await _scheduled_pod(hub, rp)
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise errors.bad_request(f"cannot {what} a container in a completed pod; "
                                 f"current phase is {phase}")
    if not hub.node_connected(node):
        raise errors.service_unavailable(f"node {node} is not connected to the server")
    return pod, node


def _container_of(pod: dict, rp: ResourcePath, q) -> str:
    containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    container = q.get("container") or (containers[0] if containers else "")
    if container not in containers:
        raise errors.bad_request(f"container {container} is not valid for pod {rp.name}")
    return container


async def serve_exec(hub: CloudHub, request: web.Request, rp: ResourcePath,
                     user: User) -> web.StreamResponse:
    """pods/<name>/exec: `podman exec` on the node, over websocket v5/v4 or SPDY v4."""
    return await _serve_remotecommand(hub, request, rp, STREAM_EXEC)


async def serve_attach(hub: CloudHub, request: web.Request, rp: ResourcePath,
                       user: User) -> web.StreamResponse:
    """pods/<name>/attach: `podman attach` on the node; detaching leaves the container
    running."""
    return await _serve_remotecommand(hub, request, rp, STREAM_ATTACH)


async def _serve_remotecommand(hub: CloudHub, request: web.Request, rp: ResourcePath,
                               op: str) -> web.StreamResponse:
    pod, node = await _stream_target(hub, rp, "exec into" if op == STREAM_EXEC else "attach to")
    q = request.query
    container = _container_of(pod, rp, q)
    tty = _true(q, "tty")
    stdin, stdout = _true(q, "stdin"), _true(q, "stdout", True)
    stderr = _true(q, "stderr", True) and not tty
    command = q.getall("command", [])
    if op == STREAM_EXEC and not command:
        raise errors.bad_request("you must specify at least one command for the container")
    if not (stdin or stdout or stderr):
        raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    # the SPDY streams the client opens follow its query, whatever the container allows
    expect = {"error"} | {name for name, on in (("stdin", stdin), ("stdout", stdout),
                                                ("stderr", stderr), ("resize", tty)) if on}
    if op == STREAM_ATTACH:  # a container without stdin / tty gets neither
        spec = next(c for c in pod["spec"]["containers"] if c["name"] == container)
        stdin = stdin and bool(spec.get("stdin"))
        tty = tty and bool(spec.get("tty"))
    params = ExecRequest(namespace=rp.namespace or "", pod=rp.name or "",
                         uid=pod["metadata"]["uid"], container=container, command=command,
                         stdin=stdin, tty=tty)
    if wants_websocket(request):
        client: _Client = await _WsClient.accept(request)
    elif wants_spdy(request):
        client = await _SpdyClient.accept(request, expect)
    else:
        raise errors.bad_request(f"{op} needs a connection upgrade: websocket "
                                 f"(v5.channel.k8s.io) or SPDY/3.1 (v4.channel.k8s.io)")
    try:
        if not await client.ready():
            return client.response
        try:
            session, stream_id, queue = await hub.open_stream(node, op, params.to_content())
        except errors.StatusError as e:
            await client.finish(e.stream_status())
            return client.response
        try:
            status = await _relay(client, session, stream_id, queue, command, op)
            if status is not None:
                await client.finish(status)
        finally:
            await hub.close_stream(session, stream_id)
    finally:
        await client.close()
    return client.response


async def _relay(client: _Client, session, stream_id: str, queue: asyncio.Queue,
                 command: list[str], op: str) -> dict | None:
    """Frames both ways until the process ends (its Status) or the client leaves (None)."""
    def to_node(kind: str, content) -> None:
        session.send_live(stream_frame(stream_id, kind, content, source=CLOUD))
    reader = asyncio.create_task(client.pump(to_node))
    try:
        while True:
            frame = await _next_frame(queue, reader)
            if frame is None:
                return None  # the client went away
            kind, content = frame
            if kind == FRAME_DATA:
                await client.output(2 if content.get("fd") == 2 else 1,
                                    content_data(content))
            elif kind == FRAME_EXIT:
                code = int(content.get("code") or 0)
                if code and op == STREAM_EXEC:
                    return errors.exit_code_status(command, code)
                return errors.stream_success()
            elif kind == FRAME_ERROR:
                return errors.StatusError(int(content.get("code") or 500),
                                          content.get("reason") or "InternalError",
                                          content.get("message") or f"{op} failed"
                                          ).stream_status()
            elif kind == FRAME_CLOSE:
                return errors.stream_success()
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader


class _Client:
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


class ChannelCodec:
    """The framing of one remotecommand websocket protocol, with no I/O: a channel number in
    front of every message (a byte, or an ASCII digit then base64 for the base64 protocols).
    Input is read from text and binary frames alike, as upstream's wsstream reads it (the
    Python client writes stdin in text frames)."""

    def __init__(self, protocol: str | None) -> None:
        self.protocol = protocol or ""
        self.base64 = self.protocol in _BASE64_PROTOCOLS
        self.v5 = self.protocol == V5_PROTOCOL
        # v4 and v5 put the Status on the error channel as JSON; the older protocols write
        # only a failure's message, and nothing on success (the kubelet's v1WriteStatusFunc)
        self.status_json = self.protocol in _STATUS_JSON_PROTOCOLS

    def decode(self, payload: bytes | str) -> tuple[int, bytes] | None:
        """(channel, data) of one incoming message, or None when it carries nothing."""
        raw = payload.encode() if isinstance(payload, str) else payload
        if not raw:
            return None
        ch, data = raw[0], raw[1:]
        if self.base64:
            ch -= ord("0")
            try:
                data = base64.b64decode(data, validate=True)
            except binascii.Error:
                return None
        return ch, data

    def encode(self, ch: int, data: bytes) -> bytes | str:
        """One outgoing message: text for the base64 protocols, binary otherwise."""
        if self.base64:
            return chr(ord("0") + ch) + base64.b64encode(data).decode()
        return bytes([ch]) + data

    def status(self, status: dict) -> bytes | None:
        """What the error channel carries for a final Status (None: nothing)."""
        if self.status_json:
            return orjson.dumps(status)
        if status.get("status") == "Success":
            return None
        return str(status.get("message") or "").encode()


class _WsClient(_Client):
    """remotecommand over websocket (see ChannelCodec); v5 adds the close channel (255)
    that half-closes stdin (kubectl cp needs it)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.response = self.ws = ws
        self.codec = ChannelCodec(ws.ws_protocol)

    @classmethod
    async def accept(cls, request: web.Request) -> _WsClient:
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


class _SpdyClient(_Client):
    """remotecommand v4 over SPDY: one stream per role, named by its streamtype header;
    the Status goes on the error stream as JSON, then every stream is half-closed."""

    def __init__(self, expect: set[str]) -> None:
        self.expect = expect
        self.streams: dict[str, SpdyStream] = {}
        self.all_here = asyncio.Event()
        self.conn: SpdyConnection | None = None

    @classmethod
    async def accept(cls, request: web.Request, expect: set[str]) -> _SpdyClient:
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


async def serve_portforward(hub: CloudHub, request: web.Request, rp: ResourcePath,
                            user: User) -> web.StreamResponse:
    """pods/<name>/portforward (portforward.k8s.io over SPDY): per forwarded connection the
    client opens an error and a data stream sharing a requestid; each pair becomes one
    "portforward" tunnel stream to the agent, which connects to the port inside the pod."""
    pod, node = await _stream_target(hub, rp, "port-forward to")
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
            frame = await _next_frame(queue, up)
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
                kind, content = await _next_frame(queue)
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
