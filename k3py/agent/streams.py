"""Stream requests arriving through the tunnel (pods/log, exec, attach, portforward), served
from the runtime.

Registered on edgehub.stream_handlers by main; frames go back with edgehub.send_live. Exec and
attach go through podman's API (one hijacked connection each, no podman process)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from k3py.agent.edgehub import EdgeHub
from k3py.agent.logwindow import log_window, tail_lines
from k3py.agent.pods import PodSyncer
from k3py.agent.portforward import forward_port
from k3py.agent.runtime.libpod import LibpodAPI
from k3py.agent.runtime.libpod_streams import ApiStream, NotRunning, attach_stream, exec_stream
from k3py.tunnel.message import EDGE, Message, stream_frame
from k3py.tunnel.protocol import (
    FRAME_CLOSE,
    FRAME_DATA,
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

__all__ = ["install_stream_handlers"]


def install_stream_handlers(hub: EdgeHub, pods: PodSyncer, runtime: LibpodAPI) -> None:
    async def log(msg: Message) -> None:
        r = LogRequest.from_content(msg.content)
        sid = msg.id
        name = pods.container_name(r.namespace, r.pod, r.container)
        if name is None:
            hub.send_live(_not_here(sid, r.pod))
            return
        window = log_window(pods.log_marks(r.namespace, r.pod, r.container),
                            r.previous, r.since_seconds, r.since_time)
        if window is None:
            hub.send_live(stream_frame(sid, FRAME_ERROR, {
                "code": 400, "reason": "BadRequest",
                "message": f'previous terminated container "{r.container}" in pod '
                           f'"{r.pod}" not found'}, source=EDGE))
            return
        tail = int(r.tail_lines) if r.tail_lines not in (None, "") else None
        limit = int(r.limit_bytes) if r.limit_bytes else 0
        sent = 0
        if window.empty:
            chunks = _no_chunks()
        elif window.until:  # the previous run: podman would tail before --until, so tail here
            chunks = _tailed(runtime.logs(name, since=window.since, until=window.until,
                                          timestamps=r.timestamps), tail)
        else:
            chunks = runtime.logs(name, follow=r.follow, tail=tail, since=window.since,
                                  timestamps=r.timestamps)
        async for chunk in chunks:
            if limit:
                chunk = chunk[:max(0, limit - sent)]
            sent += len(chunk)
            if chunk and not hub.send_live(stream_frame(sid, FRAME_DATA, data_content(chunk),
                                                        source=EDGE)):
                return
            if limit and sent >= limit:
                break
        hub.send_live(stream_frame(sid, FRAME_CLOSE, source=EDGE))

    async def exec_(msg: Message) -> None:
        r = ExecRequest.from_content(msg.content)
        sid = msg.id
        name = pods.container_name(r.namespace, r.pod, r.container)
        command = r.command
        if name is None:
            hub.send_live(_not_here(sid, r.pod))
            return
        if not command:
            hub.send_live(stream_frame(sid, FRAME_ERROR, {
                "code": 400, "reason": "BadRequest",
                "message": "you must specify at least one command for the container"},
                source=EDGE))
            return

        async def start(size: tuple[int, int] | None) -> ApiStream:
            return await exec_stream(runtime, name, command, stdin=r.stdin, tty=r.tty,
                                     size=size)
        await _serve_api(hub, sid, r, start)

    async def attach(msg: Message) -> None:
        """Attach to the running container through the API; a detach (the stream's close)
        leaves the container running: signals are not proxied."""
        r = ExecRequest.from_content(msg.content)
        sid = msg.id
        name = pods.container_name(r.namespace, r.pod, r.container)
        if name is None:
            hub.send_live(_not_here(sid, r.pod))
            return

        async def start(size: tuple[int, int] | None) -> ApiStream:
            stream = await attach_stream(runtime, name, stdin=r.stdin)
            if size:
                with contextlib.suppress(Exception):
                    await stream.resize(*size)
            return stream
        await _serve_api(hub, sid, r, start)

    async def portforward(msg: Message) -> None:
        r = PortForwardRequest.from_content(msg.content)
        pod = pods.find_pod(r.namespace, r.pod)
        if pod is None:
            hub.send_live(_not_here(msg.id, r.pod))
            return
        await forward_port(hub, runtime, msg.id, pod, r.port, flow=r.flow)

    hub.stream_handlers[STREAM_LOG] = log
    hub.stream_handlers[STREAM_EXEC] = exec_
    hub.stream_handlers[STREAM_ATTACH] = attach
    hub.stream_handlers[STREAM_PORTFORWARD] = portforward


async def _no_chunks() -> AsyncIterator[bytes]:
    return
    yield b""


async def _tailed(chunks: AsyncIterator[bytes], tail: int | None) -> AsyncIterator[bytes]:
    """A finished log, its last `tail` lines only (all when tail is None)."""
    data = b""
    async for chunk in chunks:
        data += chunk
    yield data if tail is None else tail_lines(data, tail)


def _not_here(sid: str, pod: str) -> Message:
    return stream_frame(sid, FRAME_ERROR, {
        "code": 404, "reason": "NotFound",
        "message": f'pod "{pod}" is not running on this node'}, source=EDGE)


def _send_data(hub: EdgeHub, sid: str, fd: int, data: bytes) -> bool:
    return hub.send_live(stream_frame(sid, FRAME_DATA, data_content(data, fd), source=EDGE))


def _size(content) -> tuple[int, int] | None:
    """(rows, cols) of a resize frame, None when it carries no usable size."""
    try:
        rows, cols = int(content.get("Height") or 0), int(content.get("Width") or 0)
    except (AttributeError, TypeError, ValueError):
        return None
    return (rows, cols) if rows > 0 and cols > 0 else None


async def _serve_api(hub: EdgeHub, sid: str, r: ExecRequest, start) -> None:
    """An API exec/attach to its end: the exit frame, or a Status when the container is not
    running (other runtime errors reach the client as the handler's 500)."""
    try:
        code = await _api_session(hub, sid, start, tty=r.tty)
    except NotRunning:
        hub.send_live(stream_frame(sid, FRAME_ERROR, {
            "code": 400, "reason": "BadRequest",
            "message": f'container "{r.container}" in pod "{r.pod}" is not running'},
            source=EDGE))
        return
    hub.send_live(stream_frame(sid, FRAME_EXIT, {"code": code}, source=EDGE))


async def _api_session(hub: EdgeHub, sid: str, start, *, tty: bool) -> int:
    """Relay one API exec/attach (`start(size)` opens it) through the tunnel; its exit code.

    The client sends its terminal size first thing: a size already queued when the session
    starts is the one it starts with, so the first lines a shell prints fit the terminal."""
    inputs = hub.stream_input(sid)
    pending: list[tuple[str, object]] = []
    size = None
    while not inputs.empty():
        op, content = inputs.get_nowait()
        if op == FRAME_RESIZE and tty:
            size = _size(content) or size
        else:
            pending.append((op, content))
    stream = await start(size)  # NotRunning: the caller's Status

    async def handle(op: str, content) -> None:
        if op == FRAME_STDIN:
            await stream.write(content_data(content))
        elif op == FRAME_STDIN_CLOSE:
            await stream.close_stdin()
        elif op == FRAME_RESIZE and tty and (rows_cols := _size(content)):
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
