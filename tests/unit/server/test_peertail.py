"""A node's MQTT tail through the server that holds its tunnel (k3py/server/edge/peertail.py):
which tails may be asked for, how a batch is read (bounded, a bad entry costing only itself),
the peer's frames both ways, a node's error carried as its Status; and, over a websocket on
loopback (a stand-in for the node's batches, none of the servers), how either end going ends
the other: the tab's server hanging up ends the node's tail, the peer's tail ending closes the
socket cleanly, the peer gone is a 503."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from k3py.api import errors
from k3py.server.edge.peertail import (
    Batch,
    _forward,
    _peer_batches,
    batch_frame,
    error_frame,
    read_batch,
    read_peer_frame,
    tail_target,
)
from k3py.tunnel.mqtt import DEFAULT_FILTER, MAX_BATCH, TailEntry
from tests.unit.conftest import serve_app

pytestmark = pytest.mark.unit

UPDATE = "$hw/events/device/default/thermo/twin/update"


def _entry(i: int, device: tuple[str, str] | None = ("default", "thermo")) -> TailEntry:
    return TailEntry(1000.0 + i, "in", UPDATE, 12, f'{{"n": {i}}}', device)


def test_a_tail_names_a_node_and_a_valid_filter():
    assert tail_target("n1", None) == ("n1", DEFAULT_FILTER)
    assert tail_target("n1", "") == ("n1", DEFAULT_FILTER)
    assert tail_target("n1", "$hw/+/device/#") == ("n1", "$hw/+/device/#")
    for node, topic_filter, says in ((None, None, 'needs a "node"'), ("", "#", 'needs a "node"'),
                                     (7, "#", 'needs a "node"'),
                                     ("n1", "a/#/b", "not an MQTT topic filter"),
                                     ("n1", "a/b+", "not an MQTT topic filter"),
                                     ("n1", ["#"], "not an MQTT topic filter")):
        with pytest.raises(errors.StatusError) as e:
            tail_target(node, topic_filter)
        assert e.value.code == 400 and says in e.value.message, (node, topic_filter)


def test_a_batch_is_bounded_and_a_bad_entry_costs_only_itself():
    good = [_entry(i).to_content() for i in range(3)]
    entries, dropped = read_batch({"messages": [good[0], {"direction": "sideways"}, "x",
                                                good[1], good[2]], "dropped": 4})
    assert entries == [_entry(0), _entry(1), _entry(2)] and dropped == 4
    many = [_entry(i).to_content() for i in range(MAX_BATCH + 10)]
    assert len(read_batch({"messages": many, "dropped": 0})[0]) == MAX_BATCH
    for dropped in (-1, True, "3", 1.5, None):
        assert read_batch({"messages": [], "dropped": dropped}) == ([], 0)
    assert read_batch("not a batch") == ([], 0)


def test_the_peers_frames_carry_batches_whole_and_errors_as_their_status():
    batch = ([_entry(0), _entry(1, None)], 7)
    assert read_peer_frame(batch_frame(batch)) == batch  # payloads and devices kept
    lost = errors.service_unavailable("the node's tunnel disconnected")
    with pytest.raises(errors.StatusError) as e:
        read_peer_frame(error_frame(lost))
    assert (e.value.code, e.value.reason, e.value.message) == (
        503, "ServiceUnavailable", "the node's tunnel disconnected")
    with pytest.raises(errors.StatusError) as e:
        read_peer_frame('{"error": {"code": 99}}')  # never a code a tab cannot show
    assert e.value.code == 503 and e.value.message == "the node's tail ended"
    for garbage in ("nope", "[]", '{"dropped": 1}'):
        with pytest.raises(ValueError):
            read_peer_frame(garbage)


async def _peer(batches: AsyncIterator[Batch], abort: bool = False):
    """A peer serving `batches` on a websocket (`abort`: its connection cut after the first
    frame); (runner, url)."""
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if abort:
            await ws.send_str(batch_frame(([_entry(0)], 0)))
            request.transport.abort()
            return ws
        await _forward(ws, batches)
        return ws
    app = web.Application()
    app.router.add_get("/", handler)
    runner, port = await serve_app(app)
    return runner, f"http://127.0.0.1:{port}/"


async def _read_all(url: str) -> list[Batch]:
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        return [b async for b in _peer_batches(ws, "n1", "127.0.0.9")]


async def test_the_tabs_server_hanging_up_ends_the_nodes_tail():
    ended = asyncio.Event()

    async def batches() -> AsyncIterator[Batch]:
        try:
            yield [_entry(0)], 0
            await asyncio.Event().wait()  # the node sends nothing more
        finally:
            ended.set()
    runner, url = await _peer(batches())
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            assert read_peer_frame((await ws.receive(timeout=5)).data) == ([_entry(0)], 0)
        await asyncio.wait_for(ended.wait(), 5)
    finally:
        await runner.cleanup()


async def test_the_peers_end_reaches_the_tab_as_an_end_an_error_or_a_503():
    async def closed() -> AsyncIterator[Batch]:  # the node closed its tail
        yield [_entry(0)], 2

    async def lost() -> AsyncIterator[Batch]:  # the node's tunnel went down at the peer
        yield [_entry(0)], 0
        raise errors.service_unavailable("the node's tunnel disconnected")
    runner, url = await _peer(closed())
    try:
        assert await asyncio.wait_for(_read_all(url), 5) == [([_entry(0)], 2)]
    finally:
        await runner.cleanup()
    for peer, says in ((_peer(lost()), "the node's tunnel disconnected"),
                       (_peer(closed(), abort=True), "server 127.0.0.9, which holds its "
                                                     "tunnel, went away")):
        runner, url = await peer
        try:
            with pytest.raises(errors.StatusError) as e:
                await asyncio.wait_for(_read_all(url), 5)
            assert e.value.code == 503 and says in e.value.message, e.value.message
        finally:
            await runner.cleanup()
