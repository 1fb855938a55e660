"""Pure parts of the libpod API runtime: the multiplexed stream framing podman writes for
logs and execs, where the agent's own service socket goes, and the requests a pod's removal
makes (against a fake API on a unix socket)."""

from __future__ import annotations

import asyncio
import json
import os
import struct

import pytest
from aiohttp import web

from k3py.agent.runtime.libpod import Frames, LibpodAPI, socket_path_for

pytestmark = pytest.mark.unit


def _frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


def test_a_log_keeps_whatever_the_container_wrote():
    """A log is the container's own output: a line that looks like podman's attach noise is
    kept there (only exec streams drop it), and empty frames are skipped."""
    noise = b"Error: read unixpacket @->/run/x/attach: read: connection reset by peer\n"
    data = _frame(1, b"out\n") + _frame(2, noise) + _frame(1, b"")
    assert Frames(attach_noise=False).feed(data) == [(1, b"out\n"), (2, noise)]
    assert Frames().feed(data) == [(1, b"out\n")]


def test_socket_path_fits_a_unix_socket(tmp_path):
    short = socket_path_for(str(tmp_path / "agent"))
    assert short == str(tmp_path / "agent" / "podman.sock")
    deep = tmp_path / ("d" * 120) / "agent"
    long = socket_path_for(str(deep))
    assert len(long) <= 100 and long.endswith(".sock")
    assert long == socket_path_for(str(deep))  # stable: a restarted agent finds it again
    assert long != socket_path_for(str(deep) + "2")
    assert os.path.isabs(long)


async def test_a_pod_is_removed_without_podmans_pod_stop(tmp_path):
    """remove_pod stops the app containers one by one, in parallel (a container's stop lets
    go of its lock while it waits; a pod stop holds the pod's lock, and with it every pod
    listing, for the whole grace period), leaves the infra container to the removal, and
    removes the pod after its containers stopped."""
    calls: list[str] = []
    stopping = 0
    overlap = 0

    async def containers(request: web.Request) -> web.Response:
        calls.append(f"list {json.loads(request.query['filters'])}")
        return web.json_response([{"Id": "app1"}, {"Id": "app2"},
                                  {"Id": "infra", "IsInfra": True}])

    async def stop(request: web.Request) -> web.Response:
        nonlocal stopping, overlap
        calls.append(f"stop {request.match_info['id']} t={request.query['timeout']}")
        stopping += 1
        overlap = max(overlap, stopping)
        await asyncio.sleep(0.2)
        stopping -= 1
        return web.Response(status=204)

    async def other(request: web.Request) -> web.Response:
        calls.append(f"{request.method} {request.path.split('/libpod')[1]}")
        return web.json_response({})
    app = web.Application()
    app.router.add_get("/v4.0.0/libpod/containers/json", containers)
    app.router.add_post("/v4.0.0/libpod/containers/{id}/stop", stop)
    app.router.add_route("*", "/v4.0.0/libpod/{tail:.*}", other)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = str(tmp_path / "api.sock")
    await web.UnixSite(runner, sock).start()
    rt = LibpodAPI(agent_dir=str(tmp_path / "agent"), endpoint=f"unix://{sock}")
    try:
        await rt.open()
        await rt.remove_pod("pod1", grace=30)
    finally:
        await rt.close()
        await runner.cleanup()
    calls = [c for c in calls if c != "GET /_ping"]  # open() checked the socket
    assert calls[0] == "list {'pod': ['pod1']}"
    assert sorted(calls[1:3]) == ["stop app1 t=30", "stop app2 t=30"]
    assert overlap == 2  # in parallel
    assert calls[3:] == ["DELETE /pods/pod1"]
