"""The watch verb over HTTP: newline-delimited JSON events, bookmarks, timeouts, Table rows.

Consumes Registry.watch; a too-old resourceVersion becomes an ERROR event with a 410 Status."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from aiohttp import web

from k3py.api import errors, kinds
from k3py.api.resources import Resource
from k3py.server.apiserver.negotiation import (
    bool_param,
    finish_json,
    include_object,
    int_param,
    json_body,
    wants_table,
)
from k3py.server.registry import RawObject, Registry

__all__ = ["serve_watch", "stop_pump", "BOOKMARK_INTERVAL"]

BOOKMARK_INTERVAL = 60.0  # seconds, jittered like upstream
_IDLE_CHECK = 5.0


def _line(event_type: str, obj: dict | RawObject) -> bytes:
    if isinstance(obj, RawObject):
        return finish_json(b'{"type":"%s","object":%s}' % (event_type.encode(), obj.data))
    return json_body({"type": event_type, "object": obj})


def _rv(obj: dict | RawObject) -> str | None:
    if isinstance(obj, RawObject):
        return obj.resource_version
    return (obj.get("metadata") or {}).get("resourceVersion")


async def stop_pump(pump_task: asyncio.Task, stream: object) -> None:
    """End a task that reads a Registry.watch stream, and the stream (its store watch)."""
    pump_task.cancel()
    with contextlib.suppress(BaseException):
        await pump_task
    with contextlib.suppress(Exception):
        await stream.aclose()  # type: ignore[attr-defined]


async def serve_watch(request: web.Request, registry: Registry, res: Resource,
                      namespace: str | None, name: str | None) -> web.StreamResponse:
    q = request.query
    field_selector = q.get("fieldSelector", "")
    if name:
        field_selector = ",".join(filter(None, [field_selector, f"metadata.name={name}"]))
    timeout = int_param(request, "timeoutSeconds")
    if timeout is None or timeout <= 0:
        timeout = 1800 + random.randint(0, 1800)
    bookmarks = bool_param(request, "allowWatchBookmarks")
    send_initial = q.get("sendInitialEvents")
    as_table = wants_table(request)
    include = include_object(request)

    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                       "Cache-Control": "no-cache"})
    response.enable_chunked_encoding()
    try:
        stream = await registry.watch(
            res, namespace, resource_version=q.get("resourceVersion", ""),
            label_selector=q.get("labelSelector", ""), field_selector=field_selector,
            send_initial_events=(send_initial == "true") if send_initial else None,
            raw=not as_table)
    except errors.StatusError as e:
        if e.code != 410:
            raise
        await response.prepare(request)
        await response.write(_line("ERROR", e.to_status()))
        await response.write_eof()
        return response
    await response.prepare(request)

    queue: asyncio.Queue = asyncio.Queue(maxsize=1000)

    async def pump() -> None:
        try:
            async for event in stream:
                await queue.put(event)
        finally:
            await queue.put(None)

    pump_task = asyncio.create_task(pump())
    deadline = time.monotonic() + timeout
    next_bookmark = time.monotonic() + BOOKMARK_INTERVAL * random.uniform(0.8, 1.0)
    last_rv = q.get("resourceVersion", "") or str(await registry.current_revision())
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            wait = min(deadline, next_bookmark if bookmarks else deadline, now + _IDLE_CHECK) - now
            try:  # asyncio.timeout, not wait_for: on 3.11 that could swallow a cancel
                async with asyncio.timeout(max(wait, 0.01)):
                    event = await queue.get()
            except TimeoutError:
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                if bookmarks and time.monotonic() >= next_bookmark:
                    next_bookmark = time.monotonic() + BOOKMARK_INTERVAL
                    await response.write(_line("BOOKMARK", {
                        "kind": res.kind, "apiVersion": res.api_version,
                        "metadata": {"resourceVersion": last_rv}}))
                continue
            if event is None:
                break
            etype, obj = event
            if etype == "BOOKMARK" and not bookmarks and not send_initial:
                continue
            last_rv = _rv(obj) or last_rv
            if as_table and etype != "BOOKMARK":
                obj = kinds.build_table(res, [obj], include_object=include)
                obj["metadata"] = {"resourceVersion": last_rv}
            batch = [_line(etype, obj)]
            while not queue.empty() and len(batch) < 100:
                more = queue.get_nowait()
                if more is None:
                    queue.put_nowait(None)
                    break
                etype, obj = more
                last_rv = _rv(obj) or last_rv
                if as_table and etype != "BOOKMARK":
                    obj = kinds.build_table(res, [obj], include_object=include)
                    obj["metadata"] = {"resourceVersion": last_rv}
                batch.append(_line(etype, obj))
            await response.write(b"".join(batch))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        await stop_pump(pump_task, stream)
    with contextlib.suppress(Exception):
        await response.write_eof()
    return response
