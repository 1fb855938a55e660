"""The dashboard's live socket (live.py) in-process, over a real registry on SQLite, served on
loopback and read by a websocket client as a tab reads it: a list longer than LIST_CHUNK
comes in frames of LIST_CHUNK rows at one resourceVersion, the watch goes on from it, and
the subscription holds none of the list's rows once sent (it lives as long as its tab;
holding its first list cost ~0.8 MiB a tab at 1,000 pods)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from k3py.server.apiserver.app import ApiServer
from k3py.server.apiserver.auth import Authenticator, AuthorizerChain, User
from k3py.server.apiserver.discovery import Discovery
from k3py.server.dashboard.live import LIST_CHUNK, LiveSocket
from k3py.server.registry import Registry
from tests.unit.conftest import serve_app

CONFIGMAPS = 2 * LIST_CHUNK + 7
ADMIN = User("admin", ("system:masters",))


async def _serve_live(registry: Registry, sockets: list[LiveSocket]) -> tuple[web.AppRunner, int]:
    """The live websocket at /live, as the admin; each LiveSocket made is put in `sockets`."""
    api = ApiServer(registry=registry, resources=registry.resources,
                    authenticator=Authenticator(), authorizer=AuthorizerChain(),
                    discovery=Discovery(registry.resources))

    async def live(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sockets.append(LiveSocket(api, ws, ADMIN, {}))
        await sockets[-1].serve()
        return ws
    app = web.Application()
    app.router.add_get("/live", live)
    return await serve_app(app)


def _configmap(name: str) -> dict:
    return {"metadata": {"name": name}, "data": {"k": "v"}}


def _rows_held(task: asyncio.Task) -> int:
    """The rows (dicts with a uid) that the locals of the task's coroutines (the one it runs
    and those it awaits) reach through dicts, lists and tuples."""
    stack: list = []
    awaited = task.get_coro()
    while awaited is not None and getattr(awaited, "cr_frame", None) is not None:
        stack.extend(awaited.cr_frame.f_locals.values())
        awaited = awaited.cr_await
    seen: set[int] = set()
    rows = 0
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, dict):
            rows += "uid" in value
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return rows


async def test_a_long_list_comes_in_frames_and_is_not_held(env):
    res = env.res("configmaps")
    for i in range(CONFIGMAPS):
        await env.registry.create(res, "default", _configmap(f"cm-{i:03d}"))
    sockets: list[LiveSocket] = []
    runner, port = await _serve_live(env.registry, sockets)
    try:
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(f"http://127.0.0.1:{port}/live") as ws:
            await ws.send_json({"op": "watch", "id": "c", "group": "", "resource": "configmaps",
                                "namespace": "default"})
            frames: list[dict] = []
            while not frames or frames[-1].get("more"):
                frames.append(await asyncio.wait_for(ws.receive_json(), 10))
            await env.registry.create(res, "default", _configmap("late"))
            event = await asyncio.wait_for(ws.receive_json(), 10)
            held = _rows_held(sockets[0].subscriptions["c"])  # as it watches on
    finally:
        await runner.cleanup()
    assert [f["type"] for f in frames] == ["list"] * 3, frames
    assert [len(f["rows"]) for f in frames] == [LIST_CHUNK, LIST_CHUNK, 7]
    assert [bool(f.get("more")) for f in frames] == [True, True, False]
    assert len({f["resourceVersion"] for f in frames}) == 1, frames
    assert sorted(r["name"] for f in frames for r in f["rows"]) == \
        [f"cm-{i:03d}" for i in range(CONFIGMAPS)]
    assert event["type"] == "events" and \
        [(t, r["name"]) for t, r in event["events"]] == [("ADDED", "late")], event
    assert held == 0, f"the subscription holds {held} rows after sending them"
