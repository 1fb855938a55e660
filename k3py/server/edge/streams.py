"""Pod streams served through a node's tunnel: pods/log, pods/exec and pods/attach (the
remotecommand protocol over websocket v5/v4 or SPDY/3.1 v4) and pods/portforward (SPDY/3.1,
raw or tunneled in a websocket), relayed to the node's agent as GROUP_STREAM frames.

Registered on the API server by `install`. Here: logs (read as podlogs.py does), and the
exec/attach relay; the clients it relays for are execclients.py's (websocket framing:
channels.py), port-forward is portforward.py's, targets and frames streamrelay.py's.
EXEC_PROTOCOLS, ChannelCodec and serve_portforward stay importable from here."""

from __future__ import annotations

import asyncio
import contextlib
import functools

from aiohttp import web

from k3py.api import errors
from k3py.server.apiserver.auth import User
from k3py.server.apiserver.paths import ResourcePath
from k3py.server.edge.channels import EXEC_PROTOCOLS, ChannelCodec
from k3py.server.edge.cloudhub import CloudHub
from k3py.server.edge.execclients import RemoteCommandClient, SpdyClient, WsClient
from k3py.server.edge.peerrelay import PeerRelay
from k3py.server.edge.podlogs import log_request, node_log
from k3py.server.edge.portforward import serve_portforward
from k3py.server.edge.spdyconn import wants_spdy, wants_websocket
from k3py.server.edge.streamrelay import next_frame, scheduled_pod, stream_target
from k3py.tunnel.message import CLOUD, stream_frame
from k3py.tunnel.protocol import (
    FRAME_CLOSE,
    FRAME_DATA,
    FRAME_ERROR,
    FRAME_EXIT,
    STREAM_ATTACH,
    STREAM_EXEC,
    ExecRequest,
    content_data,
)

__all__ = ["serve_log", "serve_exec", "serve_attach", "serve_portforward", "EXEC_PROTOCOLS",
           "install", "ChannelCodec"]

def install(api, hub: CloudHub, peers: PeerRelay | None = None) -> None:
    """Register the stream subresources on the API server; with `peers` (servers sharing a
    datastore), a stream to a node whose tunnel is on another server is relayed there."""
    for sub, serve in (("log", serve_log), ("exec", serve_exec), ("attach", serve_attach),
                       ("portforward", serve_portforward)):
        api.streams[sub] = functools.partial(_serve_here_or_at_peer, hub, peers, serve)


async def _serve_here_or_at_peer(hub: CloudHub, peers: PeerRelay | None, serve,
                                 request: web.Request, rp: ResourcePath,
                                 user: User) -> web.StreamResponse:
    if peers is not None and not peers.is_peer(user):
        _, node = await scheduled_pod(hub, rp.namespace, rp.name)
        if not hub.node_connected(node):
            return await peers.relay(request, node)
    return await serve(hub, request, rp, user)


async def serve_log(hub: CloudHub, request: web.Request, rp: ResourcePath,
                    user: User) -> web.StreamResponse:
    """GET pods/<name>/log: relayed from the node's runtime through the tunnel (podlogs.py);
    the node's error is the answer's Status until the first bytes, then ends the answer. A
    followed log ends when its client goes (kubectl's Ctrl-C, a peer closing its request),
    even while the pod is quiet."""
    pod, node = await scheduled_pod(hub, rp.namespace, rp.name)
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})

    def client_gone() -> bool:
        return request.transport is None or request.transport.is_closing()
    async with node_log(hub, node, log_request(pod, request.query), client_gone) as chunks:
        try:
            async for chunk in chunks:
                if not resp.prepared:
                    await resp.prepare(request)
                await resp.write(chunk)
        except errors.StatusError:
            if not resp.prepared:
                raise
    if not resp.prepared:
        await resp.prepare(request)
    await resp.write_eof()
    return resp


def _true(q, key: str, default: bool = False) -> bool:
    v = q.get(key)
    return default if v is None else v.lower() in ("true", "1")


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
    pod, node = await stream_target(hub, rp, "exec into" if op == STREAM_EXEC else "attach to")
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
        client: RemoteCommandClient = await WsClient.accept(request)
    elif wants_spdy(request):
        client = await SpdyClient.accept(request, expect)
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


async def _relay(client: RemoteCommandClient, session, stream_id: str, queue: asyncio.Queue,
                 command: list[str], op: str) -> dict | None:
    """Frames both ways until the process ends (its Status) or the client leaves (None)."""
    def to_node(kind: str, content) -> None:
        session.send_live(stream_frame(stream_id, kind, content, source=CLOUD))
    reader = asyncio.create_task(client.pump(to_node))
    try:
        while True:
            frame = await next_frame(queue, reader)
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
