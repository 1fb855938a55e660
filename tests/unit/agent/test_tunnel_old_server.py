"""An agent upgraded before its server: the real EdgeHub and connect handlers against a server
that speaks the tunnel as it was before tunnel features, written here with aiohttp (its
streams: tests/tunnelpeers.py, shared with tests/integration/test_tunnel_skew.py): it sends
no hello (its first message is its keepalive probe), sends requests without "flow", and
never sends nor passes on a credit frame.

Checked: the agent still names its features when it dials, takes the server for one without
any, answers its first message, and relays 1 MiB each way on a connection the server opens
and on one it opens itself, without waiting for credit (before tunnel features: it stopped
after one 256 KiB window for good)."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest
from aiohttp import web

from k3py.agent import edgehub
from k3py.agent.edgehub import EdgeHub
from k3py.agent.metamanager import MetaManager
from k3py.agent.network.tunnelproxy import connect_through, serve_connect
from k3py.tunnel import framing
from k3py.tunnel.message import (
    CLOUD,
    GROUP_TUNNEL,
    OP_KEEPALIVE,
    Message,
    keepalive,
)
from k3py.tunnel.protocol import (
    FEATURES_HEADER,
    FRAME_CLOSE,
    FRAME_CREDIT,
    STREAM_CONNECT,
    TUNNEL_PATH,
    parse_features,
)
from k3py.tunnel.reliability import Backoff
from tests.tunnelpeers import MIB, OldTunnelEnd
from tests.unit.conftest import serve_app

pytestmark = pytest.mark.unit


class OldServer:
    """The tunnel route of a server older than features; `links` gets each agent's link."""

    def __init__(self, first: bool = True, counts: bool = False) -> None:
        self.links: asyncio.Queue[OldLink] = asyncio.Queue()
        self.first = first  # False: older than its keepalive probe, it sends nothing first
        self.counts = counts  # True: the release before features (it counts windows)

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(framing.SUBPROTOCOL,),
                                   max_msg_size=framing.MAX_FRAME_BYTES)
        await ws.prepare(request)
        link = OldLink(ws, request.headers.get(FEATURES_HEADER), self.counts)
        if self.first:
            await link.send(keepalive({"sent": 1.0}, source=CLOUD))  # its first message
        self.links.put_nowait(link)
        await link.read()
        return ws


class OldLink(OldTunnelEnd):
    """One agent's link; `keepalives`: what the agent sent back."""

    def __init__(self, ws: web.WebSocketResponse, features: str | None,
                 counts: bool = False) -> None:
        super().__init__(ws, CLOUD, counts)
        self.features = features
        self.keepalives: list[object] = []

    async def on_link(self, msg: Message) -> None:
        if msg.route.group == GROUP_TUNNEL and msg.route.operation == OP_KEEPALIVE:
            self.keepalives.append(msg.content)


@pytest.fixture(params=[False, True], ids=["before-flow-control", "release-before-features"])
async def old_server(request, tmp_path):
    """Both older servers: one from before flow control and one that counts windows."""
    async with _agent_of(OldServer(counts=request.param), tmp_path) as (hub, link):
        yield hub, link


@contextlib.asynccontextmanager
async def _agent_of(server: OldServer, tmp_path):
    """A real EdgeHub (with the connect handler) dialled in to `server`."""
    app = web.Application()
    app.router.add_get(TUNNEL_PATH, server.handle)
    runner, port = await serve_app(app)
    meta = MetaManager(str(tmp_path / "meta.db"))
    await meta.open()
    session = aiohttp.ClientSession()
    hub = EdgeHub(server=f"http://127.0.0.1:{port}", ssl_context=None, meta=meta,
                  session=session, backoff=Backoff(base=0.05, cap=0.2), node_name="n1")
    hub.stream_handlers[STREAM_CONNECT] = lambda msg: serve_connect(hub, msg,
                                                                     lambda: "127.0.0.0/8")
    hub.start()
    try:
        link = await asyncio.wait_for(server.links.get(), 10)
        await asyncio.wait_for(hub.connected.wait(), 10)
        yield hub, link
    finally:
        await hub.stop()
        await session.close()
        await meta.close()
        await runner.cleanup()


async def _within(aw, what: str):
    try:
        return await asyncio.wait_for(aw, 20)
    except TimeoutError:
        raise AssertionError(f"{what}: nothing for 20 s (waiting for credit?)") from None


async def test_the_agent_names_its_features_and_takes_the_server_for_one_without(old_server):
    hub, link = old_server
    assert parse_features(link.features) == {"flow-control", "udp-connect", "node-status"}
    assert hub.server_features == frozenset() and not hub.speaks("flow-control")
    # it never asks for a node's status: the agent posts an unchanged one every 10 s
    assert not hub.speaks("node-status")
    # the first message was not a hello: it was handled as the message it is
    await _within(_until(lambda: link.keepalives == [{"sent": 1.0}]), "the keepalive answer")


async def test_a_server_that_sends_nothing_first_is_taken_for_one_without_features(
        tmp_path, monkeypatch):
    """Older than its keepalive probe, a server may send nothing until it has something for
    the node: the agent does not wait for its first message for ever."""
    monkeypatch.setattr(edgehub, "FIRST_MESSAGE_WAIT", 0.5)
    async with _agent_of(OldServer(first=False), tmp_path) as (hub, link):
        assert hub.server_features == frozenset()
        await link.send(keepalive({"sent": 2.0}, source=CLOUD))  # then it is served
        await _within(_until(lambda: link.keepalives == [{"sent": 2.0}]),
                      "the keepalive answer")


async def _until(pred) -> None:
    while not pred():
        await asyncio.sleep(0.01)


async def test_a_connection_the_old_server_opens_moves_a_mebibyte_each_way(old_server):
    hub, link = old_server
    pod_got: asyncio.Queue[int] = asyncio.Queue()

    async def pod(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(bytes(MIB))
        pod_got.put_nowait(len(await reader.readexactly(MIB)))
        writer.close()
    listener = await asyncio.start_server(pod, "127.0.0.1", 0)
    try:
        port = listener.sockets[0].getsockname()[1]
        sid = await link.open(STREAM_CONNECT, {"ip": "127.0.0.1", "port": port})  # no "flow"
        await link.send_bytes(sid, MIB)
        await _within(link.receive_bytes(sid, MIB), "1 MiB from the pod")
        assert await _within(pod_got.get(), "1 MiB to the pod") == MIB
        op = FRAME_CREDIT
        while op == FRAME_CREDIT:  # (the agent's grants, which this server ignores)
            op, _ = await _within(link.streams[sid].get(), "the close")
        assert op == FRAME_CLOSE
    finally:
        listener.close()


async def test_a_connection_the_agent_opens_through_the_old_server_is_not_flow_controlled(
        old_server):
    hub, link = old_server
    accepted: asyncio.Queue = asyncio.Queue()
    listener = await asyncio.start_server(lambda r, w: accepted.put_nowait((r, w)),
                                          "127.0.0.1", 0)
    client_r, client_w = await asyncio.open_connection(*listener.sockets[0].getsockname()[:2])
    reader, writer = await accepted.get()
    relay = asyncio.create_task(connect_through(hub, "10.42.1.7", 80, reader, writer))
    try:
        request = await _within(link.requests.get(), "the connect request")
        assert request.content == {"ip": "10.42.1.7", "port": 80, "flow": False}
        client_w.write(bytes(MIB))
        await _within(link.receive_bytes(request.id, MIB), "1 MiB up")
        await link.send_bytes(request.id, MIB)
        assert len(await _within(client_r.readexactly(MIB), "1 MiB down")) == MIB
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
        client_w.close()
        listener.close()
