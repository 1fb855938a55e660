"""Pod streams served through a node's tunnel: pods/log and pods/exec (the websocket
remotecommand protocol), relayed to the node's agent as GROUP_STREAM frames."""

from __future__ import annotations

import asyncio
import base64
import contextlib

import orjson
from aiohttp import WSMsgType, web

from k3py.api import errors
from k3py.server.apiserver.auth import User
from k3py.server.apiserver.paths import ResourcePath
from k3py.server.cloudhub import CloudHub, _node_of
from k3py.tunnel.message import CLOUD, stream_frame

__all__ = ["serve_log", "serve_exec", "exit_status", "EXEC_PROTOCOLS", "install"]

# the Kubernetes remotecommand websocket protocols (kubectl >= 1.30 offers v5 first)
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
CH_STDIN, CH_STDOUT, CH_STDERR, CH_ERROR, CH_RESIZE, CH_CLOSE = 0, 1, 2, 3, 4, 255


def install(api, hub: CloudHub) -> None:
    """Register the stream subresources on the API server."""
    api.streams["log"] = lambda request, rp, user: serve_log(hub, request, rp, user)
    api.streams["exec"] = lambda request, rp, user: serve_exec(hub, request, rp, user)


async def serve_log(hub: CloudHub, request: web.Request, rp: ResourcePath,
                    user: User) -> web.StreamResponse:
    """GET pods/<name>/log: relayed from the node's runtime through the tunnel."""
    pod = await hub.registry.get(hub._res("", "pods"), rp.namespace, rp.name or "")
    node = _node_of(pod)
    if not node:
        raise errors.bad_request(f'pod "{rp.name}" is not scheduled to a node yet')
    q = request.query
    containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    container = q.get("container") or (containers[0] if len(containers) == 1 else "")
    if not container:
        raise errors.bad_request(
            f"a container name must be specified for pod {rp.name}, choose one of: "
            f"[{' '.join(containers)}]")
    params = {"namespace": rp.namespace, "pod": rp.name, "uid": pod["metadata"]["uid"],
              "container": container, "follow": q.get("follow") == "true",
              "tailLines": q.get("tailLines"), "sinceSeconds": q.get("sinceSeconds"),
              "sinceTime": q.get("sinceTime"), "timestamps": q.get("timestamps") == "true",
              "previous": q.get("previous") == "true", "limitBytes": q.get("limitBytes")}
    session, stream_id, queue = await hub.open_stream(node, "log", params)
    resp: web.StreamResponse | None = None
    try:
        while True:
            kind, content = await queue.get()
            if kind == "error":
                if resp is None:
                    err = content if isinstance(content, dict) else {"message": str(content)}
                    raise errors.StatusError(int(err.get("code") or 500),
                                             err.get("reason") or "InternalError",
                                             err.get("message") or "log stream failed")
                break
            if resp is None:
                resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
                await resp.prepare(request)
            if kind == "close":
                break
            if kind == "data":
                await resp.write(base64.b64decode((content or {}).get("data") or ""))
    finally:
        await hub.close_stream(session, stream_id)
    if resp is None:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
    await resp.write_eof()
    return resp

async def serve_exec(hub: CloudHub, request: web.Request, rp: ResourcePath,
                     user: User) -> web.StreamResponse:
    """pods/<name>/exec over the websocket remotecommand protocol (v5/v4.channel.k8s.io),
    relayed to `podman exec` on the node through the tunnel."""
    pod = await hub.registry.get(hub._res("", "pods"), rp.namespace, rp.name or "")
    node = _node_of(pod)
    if not node:
        raise errors.bad_request(f'pod "{rp.name}" is not scheduled to a node yet')
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        raise errors.bad_request("cannot exec into a container in a completed pod; "
                                 f"current phase is {pod['status']['phase']}")
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise errors.StatusError(400, "BadRequest",
                                 "exec needs a websocket upgrade (v5.channel.k8s.io); "
                                 "SPDY is not supported by k3py")
    q = request.query
    containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    container = q.get("container") or (containers[0] if containers else "")
    if container not in containers:
        raise errors.bad_request(f"container {container} is not valid for pod {rp.name}")
    stdin, tty = q.get("stdin") in ("true", "1"), q.get("tty") in ("true", "1")
    params = {"namespace": rp.namespace, "pod": rp.name, "uid": pod["metadata"]["uid"],
              "container": container, "command": q.getall("command", []),
              "stdin": stdin, "tty": tty}
    session, stream_id, queue = await hub.open_stream(node, "exec", params)
    ws = web.WebSocketResponse(protocols=EXEC_PROTOCOLS, heartbeat=30.0)
    try:
        await ws.prepare(request)
        v5 = ws.ws_protocol == EXEC_PROTOCOLS[0]

        async def client_to_node() -> None:
            async for frame in ws:
                if frame.type != WSMsgType.BINARY or not frame.data:
                    continue
                ch, data = frame.data[0], frame.data[1:]
                if ch == CH_STDIN:
                    op, content = "stdin", {"data": base64.b64encode(data).decode()}
                elif ch == CH_RESIZE:
                    try:
                        op, content = "resize", orjson.loads(data)
                    except ValueError:
                        continue
                elif ch == CH_CLOSE and v5 and data[:1] == bytes([CH_STDIN]):
                    op, content = "stdin-close", None
                else:
                    continue
                session.send_live(stream_frame(stream_id, op, content, source=CLOUD))
        reader = asyncio.create_task(client_to_node())
        status: dict = {"metadata": {}, "status": "Success"}
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, reader},
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    return ws  # the client went away
                kind, content = getter.result()
                content = content if isinstance(content, dict) else {}
                if kind == "data":
                    fd = CH_STDERR if content.get("fd") == 2 else CH_STDOUT
                    await ws.send_bytes(bytes([fd]) +
                                        base64.b64decode(content.get("data") or ""))
                elif kind == "exit":
                    code = int(content.get("code") or 0)
                    if code:
                        status = exit_status(params["command"], code)
                    break
                elif kind == "error":
                    status = {"metadata": {}, "status": "Failure",
                              "message": content.get("message") or "exec failed",
                              "reason": content.get("reason") or "InternalError",
                              "code": int(content.get("code") or 500)}
                    break
                elif kind == "close":
                    break
            await ws.send_bytes(bytes([CH_ERROR]) + orjson.dumps(status))
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        await ws.close()
    finally:
        await hub.close_stream(session, stream_id)
    return ws


def exit_status(command: list[str], code: int) -> dict:
    """The Status kubectl turns into its own exit code (reason NonZeroExitCode)."""
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command "
                       f"[{' '.join(command)}], exit code {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}

