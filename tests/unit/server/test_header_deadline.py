"""The first request's header deadline on a real aiohttp server on a loopback port: a
connection that never finishes its headers is cut off, one that sends a request in time is
served and stays open."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from k3py.server.apiserver.headerdeadline import DeadlineSite, HeaderDeadline

pytestmark = pytest.mark.unit


async def _serve(deadline: HeaderDeadline) -> tuple[web.AppRunner, int]:
    app = web.Application(middlewares=[deadline.middleware()])

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="ok")
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = DeadlineSite(runner, "127.0.0.1", 0, deadline=deadline)
    await site.start()
    return runner, site._bound_port


async def _closed(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), within) == b""
    except TimeoutError:
        return False


def test_slow_headers_are_cut_off_and_a_prompt_request_is_served():
    async def main():
        deadline = HeaderDeadline(timeout=0.3)
        runner, port = await _serve(deadline)
        try:
            slow_r, slow_w = await asyncio.open_connection("127.0.0.1", port)
            slow_w.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never the blank line
            ok_r, ok_w = await asyncio.open_connection("127.0.0.1", port)
            ok_w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(ok_r.readuntil(b"ok"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            assert await _closed(slow_r, 5), "the slow connection was not cut off"
            assert deadline.expired == 1
            assert not await _closed(ok_r, 0.6), "a served keep-alive connection was cut off"
            assert deadline.armed == 0
            for w in (slow_w, ok_w):
                w.close()
        finally:
            await runner.cleanup()
    asyncio.run(main())
