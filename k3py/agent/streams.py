"""Stream requests arriving through the tunnel (pods/log, exec, attach, portforward), served
from the runtime.

Registered on edgehub.stream_handlers by main; frames go back with edgehub.send_live. Exec and
attach go through podman's API (one hijacked connection each, no podman process)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator

from k3py.agent.edgehub import EdgeHub
from k3py.agent.logwindow import log_window, tail_lines
from k3py.agent.pods import PodSyncer
from k3py.agent.portforward import forward_port
from k3py.agent.runtime.libpod import LibpodAPI
from k3py.agent.runtime.libpod_streams import ApiStream, NotRunning, attach_stream, exec_stream
from k3py.tunnel.message import EDGE, Message, stream_frame

__all__ = ["install_stream_handlers"]


def install_stream_handlers(hub: EdgeHub, pods: PodSyncer, runtime: LibpodAPI) -> None:
    async def log(msg: Message) -> None:
        p = msg.content or {}
        sid = msg.id
        name = pods.container_name(p.get("namespace") or "", p.get("pod") or "",
                                   p.get("container") or "")
        if name is None:
            hub.send_live(_not_here(sid, p))
            return
        window = log_window(pods.log_marks(p.get("namespace") or "", p.get("pod") or "",
                                           p.get("container") or ""),
                            bool(p.get("previous")), p.get("sinceSeconds"), p.get("sinceTime"))
        if window is None:
            hub.send_live(stream_frame(sid, "error", {
                "code": 400, "reason": "BadRequest",
                "message": f'previous terminated container "{p.get("container")}" in pod '
                           f'"{p.get("pod")}" not found'}, source=EDGE))
            return
        tail = int(p["tailLines"]) if p.get("tailLines") not in (None, "") else None
        limit = int(p["limitBytes"]) if p.get("limitBytes") else 0
        sent = 0
        if window.empty:
            chunks = _no_chunks()
        elif window.until:  # the previous run: podman would tail before --until, so tail here
            chunks = _tailed(runtime.logs(name, since=window.since, until=window.until,
                                          timestamps=bool(p.get("timestamps"))), tail)
        else:
            chunks = runtime.logs(name, follow=bool(p.get("follow")), tail=tail,
                                  since=window.since, timestamps=bool(p.get("timestamps")))
        async for chunk in chunks:
            if limit:
                chunk = chunk[:max(0, limit - sent)]
            sent += len(chunk)
            if chunk and not hub.send_live(stream_frame(
                    sid, "data", {"data": base64.b64encode(chunk).decode()}, source=EDGE)):
                return
            if limit and sent >= limit:
                break
        hub.send_live(stream_frame(sid, "close", source=EDGE))

    async def exec_(msg: Message) -> None:
        p = msg.content or {}
        sid = msg.id
        name = pods.container_name(p.get("namespace") or "", p.get("pod") or "",
                                   p.get("container") or "")
        command = [str(c) for c in p.get("command") or []]
        if name is None:
            hub.send_live(_not_here(sid, p))
            return
        if not command:
            hub.send_live(stream_frame(sid, "error", {
                "code": 400, "reason": "BadRequest",
                "message": "you must specify at least one command for the container"},
                source=EDGE))
            return

        async def start(size: tuple[int, int] | None) -> ApiStream:
            return await exec_stream(runtime, name, command, stdin=bool(p.get("stdin")),
                                     tty=bool(p.get("tty")), size=size)
        await _serve_api(hub, sid, p, start)

    async def attach(msg: Message) -> None:
        """Attach to the running container through the API; a detach (the stream's close)
        leaves the container running: signals are not proxied."""
        p = msg.content or {}
        sid = msg.id
        name = pods.container_name(p.get("namespace") or "", p.get("pod") or "",
                                   p.get("container") or "")
        if name is None:
            hub.send_live(_not_here(sid, p))
            return

        async def start(size: tuple[int, int] | None) -> ApiStream:
            stream = await attach_stream(runtime, name, stdin=bool(p.get("stdin")))
            if size:
                with contextlib.suppress(Exception):
                    await stream.resize(*size)
            return stream
        await _serve_api(hub, sid, p, start)

    async def portforward(msg: Message) -> None:
        p = msg.content or {}
        pod = _find_pod(pods, p.get("namespace") or "", p.get("pod") or "")
        if pod is None:
            hub.send_live(_not_here(msg.id, p))
            return
        await forward_port(hub, runtime, msg.id, pod, int(p.get("port") or 0))

    hub.stream_handlers["log"] = log
    hub.stream_handlers["exec"] = exec_
    hub.stream_handlers["attach"] = attach
    hub.stream_handlers["portforward"] = portforward


async def _no_chunks() -> AsyncIterator[bytes]:
    return
    yield b""


async def _tailed(chunks: AsyncIterator[bytes], tail: int | None) -> AsyncIterator[bytes]:
    """A finished log, its last `tail` lines only (all when tail is None)."""
    data = b""
    async for chunk in chunks:
        data += chunk
    yield data if tail is None else tail_lines(data, tail)


def _not_here(sid: str, p: dict) -> Message:
    return stream_frame(sid, "error", {
        "code": 404, "reason": "NotFound",
        "message": f'pod "{p.get("pod")}" is not running on this node'}, source=EDGE)


def _find_pod(pods: PodSyncer, namespace: str, name: str) -> dict | None:
    for pod in pods.meta.pods():
        md = pod.get("metadata") or {}
        if md.get("namespace") == namespace and md.get("name") == name:
            return pod
    return None


def _send_data(hub: EdgeHub, sid: str, fd: int, data: bytes) -> bool:
    return hub.send_live(stream_frame(sid, "data", {"fd": fd,
                                                    "data": base64.b64encode(data).decode()},
                                      source=EDGE))


def _size(content) -> tuple[int, int] | None:
    """(rows, cols) of a resize frame, None when it carries no usable size."""
    try:
        rows, cols = int(content.get("Height") or 0), int(content.get("Width") or 0)
    except (AttributeError, TypeError, ValueError):
        return None
    return (rows, cols) if rows > 0 and cols > 0 else None


async def _serve_api(hub: EdgeHub, sid: str, p: dict, start) -> None:
    """An API exec/attach to its end: the exit frame, or a Status when the container is not
    running (other runtime errors reach the client as the handler's 500)."""
    try:
        code = await _api_session(hub, sid, start, tty=bool(p.get("tty")))
    except NotRunning:
        hub.send_live(stream_frame(sid, "error", {
            "code": 400, "reason": "BadRequest",
            "message": f'container "{p.get("container")}" in pod "{p.get("pod")}" is not '
                       f'running'}, source=EDGE))
        return
    hub.send_live(stream_frame(sid, "exit", {"code": code}, source=EDGE))


async def _api_session(hub: EdgeHub, sid: str, start, *, tty: bool) -> int:
    """Relay one API exec/attach (`start(size)` opens it) through the tunnel; its exit code.

    The client sends its terminal size first thing: a size already queued when the session
    starts is the one it starts with, so the first lines a shell prints fit the terminal."""
    inputs = hub.stream_input(sid)
    pending: list[tuple[str, object]] = []
    size = None
    while not inputs.empty():
        op, content = inputs.get_nowait()
        if op == "resize" and tty:
            size = _size(content) or size
        else:
            pending.append((op, content))
    stream = await start(size)  # NotRunning: the caller's Status

    async def handle(op: str, content) -> None:
        if op == "stdin":
            await stream.write(base64.b64decode((content or {}).get("data") or ""))
        elif op == "stdin-close":
            await stream.close_stdin()
        elif op == "resize" and tty and (rows_cols := _size(content)):
            with contextlib.suppress(Exception):  # a resize lost is no reason to end
                await stream.resize(*rows_cols)

    async def pump_in() -> None:
        for op, content in pending:
            await handle(op, content)
        while True:
            await handle(*await inputs.get())
    writer = asyncio.create_task(pump_in())
    try:
        async for fd, data in stream.output():
            _send_data(hub, sid, fd, data)
        return await stream.exit_code()
    finally:
        writer.cancel()
        stream.close()
