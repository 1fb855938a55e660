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


async def test_a_pod_is_removed_without_podmans_own_stops(tmp_path):
    """remove_pod signals the running app containers, in parallel, waits for their exits
    itself and kills what outlives its grace (podman's pod stop holds the pod's lock, and its
    container stop one of a few service-wide slots, for the whole grace period), leaves the
    infra and exited containers alone, and removes the pod after its containers stopped."""
    calls: list[str] = []
    waiting = 0
    overlap = 0

    async def containers(request: web.Request) -> web.Response:
        calls.append(f"list {json.loads(request.query['filters'])}")
        return web.json_response([
            {"Id": "quits", "State": "running"}, {"Id": "stays", "State": "running"},
            {"Id": "done", "State": "exited"}, {"Id": "infra", "IsInfra": True,
                                                "State": "running"}])

    async def inspect(request: web.Request) -> web.Response:
        return web.json_response({"Config": {"StopSignal": 15}})

    async def wait(request: web.Request) -> web.Response:
        nonlocal waiting, overlap
        cid = request.match_info["id"]
        calls.append(f"wait {cid} {request.query.getall('condition')}")
        waiting += 1
        overlap = max(overlap, waiting)
        try:
            await asyncio.sleep(0.2 if cid == "quits" else 1.5)  # "stays" ignores it
        finally:
            waiting -= 1
        return web.json_response(0)

    async def other(request: web.Request) -> web.Response:
        query = "&".join(f"{k}={v}" for k, v in request.query.items())
        calls.append(f"{request.method} {request.path.split('/libpod')[1]} {query}".strip())
        return web.json_response({})
    app = web.Application()
    app.router.add_get("/v4.0.0/libpod/containers/json", containers)
    app.router.add_get("/v4.0.0/libpod/containers/{id}/json", inspect)
    app.router.add_post("/v4.0.0/libpod/containers/{id}/wait", wait)
    app.router.add_route("*", "/v4.0.0/libpod/{tail:.*}", other)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = str(tmp_path / "api.sock")
    await web.UnixSite(runner, sock).start()
    rt = LibpodAPI(agent_dir=str(tmp_path / "agent"), endpoint=f"unix://{sock}")
    try:
        await rt.open()
        await rt.remove_pod("pod1", grace=1)
    finally:
        await rt.close()
        await runner.cleanup()
    calls = [c for c in calls if c != "GET /_ping"]  # open() checked the socket
    assert calls[0] == "list {'pod': ['pod1']}"
    assert sorted(calls[1:5]) == ["POST /containers/quits/kill signal=15",
                                  "POST /containers/stays/kill signal=15",
                                  "wait quits ['exited', 'stopped']",
                                  "wait stays ['exited', 'stopped']"]
    assert overlap == 2  # in parallel
    assert calls[5:] == ["POST /containers/stays/stop timeout=0",  # its grace is over
                         "DELETE /pods/pod1 force=true"]
    assert not any("/pods/pod1/stop" in c for c in calls)


async def test_only_this_clusters_pods_are_listed(tmp_path):
    """Two clusters on one host may name their nodes alike: a pod or container of another
    cluster is never listed (so never adopted or removed); one an agent older than the
    cluster label started is adopted once it is desired here, and stays listed after."""
    def labels(uid: str, cluster: str | None) -> dict:
        out = {"io.k3py.pod-uid": uid, "io.k3py.node": "n1", "io.k3py.pod-name": uid,
               "io.k3py.pod-namespace": "default"}
        return out if cluster is None else {**out, "io.k3py.cluster": cluster}
    items = [("ours", "c1"), ("theirs", "c2"), ("legacy", None), ("stray", None)]
    filters: list[dict] = []

    async def listing(request: web.Request) -> web.Response:
        filters.append(json.loads(request.query["filters"]))
        return web.json_response([{"Id": uid, "Labels": labels(uid, c)} for uid, c in items])
    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="OK")
    app = web.Application()
    app.router.add_get("/v4.0.0/libpod/pods/json", listing)
    app.router.add_get("/v4.0.0/libpod/containers/json", listing)
    app.router.add_get("/v4.0.0/libpod/_ping", ping)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = str(tmp_path / "api.sock")
    await web.UnixSite(runner, sock).start()
    rt = LibpodAPI(agent_dir=str(tmp_path / "agent"), endpoint=f"unix://{sock}",
                   node_name="n1")
    rt.cluster = "c1"
    try:
        await rt.open()
        assert set(await rt.list_pods()) == {"ours"}
        assert [c["Id"] for c in await rt.list_containers()] == ["ours"]
        assert set(await rt.list_pods(claim={"legacy", "theirs"})) == {"ours", "legacy"}
        assert set(await rt.list_pods()) == {"ours", "legacy"}  # adopted for good
        assert [c["Id"] for c in await rt.list_containers()] == ["ours", "legacy"]
    finally:
        await rt.close()
        await runner.cleanup()
    assert all(f == {"label": ["io.k3py.node=n1"]} for f in filters), filters
    made = rt._label_map({"metadata": {"uid": "u", "namespace": "ns", "name": "p"}})
    assert made["io.k3py.cluster"] == "c1" and made["io.k3py.node"] == "n1"
