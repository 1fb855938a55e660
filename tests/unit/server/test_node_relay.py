"""The server's relay of connect streams between two nodes' sessions (noderelay.py): the
request goes to the node whose pod CIDR holds the IP, frames pass both ways, either end's
close or error ends both, credit frames pass on and a node that overruns its flow-control
window ends the stream, and a request that cannot be served is answered with an error.
With an agent older than tunnel features at either end, no window is counted, the asking
node hears so, and a UDP flow to such an agent is refused; a UDP flow's window counts each
datagram's overhead."""

from __future__ import annotations

import asyncio

import pytest

from k3py.server.edge import nodestreams
from k3py.server.edge.noderelay import ConnectRelay
from k3py.server.edge.sessions import NodeSession
from k3py.tunnel.flowcontrol import DATAGRAM_OVERHEAD, STREAM_WINDOW
from k3py.tunnel.message import EDGE, GROUP_STREAM, Message, new_message, stream_frame
from k3py.tunnel.protocol import (
    FEATURES,
    FRAME_CLOSE,
    FRAME_CREDIT,
    FRAME_DATA,
    FRAME_ERROR,
    FRAME_FLOW,
    STREAM_CONNECT,
    credit_content,
    data_content,
    flow_off_content,
)

pytestmark = pytest.mark.unit

NODES = [{"metadata": {"name": "a"}, "spec": {"podCIDR": "10.42.0.0/24"}},
         {"metadata": {"name": "b"}, "spec": {"podCIDR": "10.42.1.0/24"}}]


class _Link:
    closed = False


OLD: frozenset[str] = frozenset()  # an agent older than tunnel features names none


def session(name: str, connected: bool = True, features: frozenset[str] = FEATURES
            ) -> NodeSession:
    s = NodeSession(name, features=features)
    s.ws = _Link() if connected else None  # type: ignore[assignment]
    return s


async def sent(s: NodeSession) -> list[Message]:
    out: list[Message] = []

    async def write(m: Message) -> None:
        out.append(m)
    for _ in range(5):  # let the relay's tasks run
        await asyncio.sleep(0)
    await s.queue.flush(write)
    return out


def connect(ip: str, port: int = 8080, **more) -> Message:
    """A connect request as a node sends it (an older agent's has no "flow")."""
    return new_message(source=EDGE, group=GROUP_STREAM, operation=STREAM_CONNECT,
                       content={"ip": ip, "port": port, **more})


async def relayed(a_features: frozenset[str] = FEATURES, b_features: frozenset[str] = FEATURES,
                  **request) -> tuple[NodeSession, NodeSession, Message, Message]:
    """Node a's connect stream to a pod of node b, relayed: (a, b, a's request, the stream
    the relay opened on b). a asks for flow control when it speaks it."""
    a, b = session("a", features=a_features), session("b", features=b_features)
    relay = ConnectRelay({"a": a, "b": b}, lambda: NODES)
    req = connect("10.42.1.7", **({"flow": True} if a_features else {}), **request)
    relay.request(a, req)
    [opened] = await sent(b)
    return a, b, req, opened


async def test_frames_pass_both_ways_and_a_close_ends_both():
    a, b, req, opened = await relayed()
    assert (opened.route.operation, opened.content) == (STREAM_CONNECT, {
        "ip": "10.42.1.7", "port": 8080, "flow": True})
    nodestreams.deliver(a, stream_frame(req.id, FRAME_DATA, {"data": "R0VU"}, source=EDGE))
    [up] = await sent(b)
    assert (up.header.parent_id, up.route.operation, up.content) == \
        (opened.id, FRAME_DATA, {"data": "R0VU"})
    nodestreams.deliver(b, stream_frame(opened.id, FRAME_DATA, {"data": "T0s="}, source=EDGE))
    [down] = await sent(a)
    assert (down.header.parent_id, down.content) == (req.id, {"data": "T0s="})
    nodestreams.deliver(b, stream_frame(opened.id, FRAME_CLOSE, source=EDGE))
    assert [m.route.operation for m in await sent(a)] == [FRAME_CLOSE]
    assert [m.route.operation for m in await sent(b)] == [FRAME_CLOSE]
    assert not a.streams and not b.streams


async def test_credit_passes_on_and_an_overrun_window_ends_the_stream():
    a, b, req, opened = await relayed()
    chunk = data_content(bytes(STREAM_WINDOW // 2))
    for _ in range(2):  # a full window from a
        nodestreams.deliver(a, stream_frame(req.id, FRAME_DATA, chunk, source=EDGE))
    nodestreams.deliver(b, stream_frame(opened.id, FRAME_CREDIT, credit_content(STREAM_WINDOW // 2),
                                        source=EDGE))
    assert [m.route.operation for m in await sent(b)] == [FRAME_DATA, FRAME_DATA]
    [credit] = await sent(a)
    assert (credit.route.operation, credit.content) == (FRAME_CREDIT,
                                                        credit_content(STREAM_WINDOW // 2))
    nodestreams.deliver(a, stream_frame(req.id, FRAME_DATA, chunk, source=EDGE))  # granted
    assert [m.route.operation for m in await sent(b)] == [FRAME_DATA]
    nodestreams.deliver(a, stream_frame(req.id, FRAME_DATA, data_content(b"x"), source=EDGE))
    ends = await sent(b)
    assert [m.route.operation for m in ends] == [FRAME_ERROR, FRAME_CLOSE]
    assert ends[0].content["code"] == 502
    assert [m.route.operation for m in await sent(a)] == [FRAME_CLOSE]


async def data_both_ways(a: NodeSession, b: NodeSession, req: Message, opened: Message,
                         n: int) -> tuple[list[str], list[str]]:
    """`n` bytes each way with no credit: the frames each node got."""
    chunk = data_content(bytes(65536))
    for _ in range(n // 65536):
        nodestreams.deliver(a, stream_frame(req.id, FRAME_DATA, chunk, source=EDGE))
        nodestreams.deliver(b, stream_frame(opened.id, FRAME_DATA, chunk, source=EDGE))
    return ([m.route.operation for m in await sent(a)],
            [m.route.operation for m in await sent(b)])


@pytest.mark.parametrize("a_features,b_features", [(OLD, OLD), (FEATURES, OLD), (OLD, FEATURES)],
                         ids=["both-old", "old-target", "old-source"])
async def test_with_an_older_agent_at_either_end_no_window_is_counted(a_features, b_features):
    """The stream is lenient: the relay counts nothing, so no 502, and passes credit on both
    ways (an older agent from the release before features waits for it)."""
    a, b, req, opened = await relayed(a_features, b_features)
    assert opened.content["flow"] is False  # the target keeps to no window
    flow_frames = await sent(a)
    if a_features:  # a asked for flow control: it hears it is off, first on its stream
        assert [(m.route.operation, m.content) for m in flow_frames] == \
            [(FRAME_FLOW, flow_off_content())]
    else:
        assert flow_frames == []
    got_a, got_b = await data_both_ways(a, b, req, opened, 4 * STREAM_WINDOW)
    assert got_a == got_b == [FRAME_DATA] * (4 * STREAM_WINDOW // 65536)  # no 502
    nodestreams.deliver(b, stream_frame(opened.id, FRAME_CREDIT, credit_content(1000),
                                        source=EDGE))
    nodestreams.deliver(a, stream_frame(req.id, FRAME_CREDIT, credit_content(2000),
                                        source=EDGE))
    assert [(m.route.operation, m.content) for m in await sent(a)] == \
        [(FRAME_CREDIT, credit_content(1000))]
    assert [(m.route.operation, m.content) for m in await sent(b)] == \
        [(FRAME_CREDIT, credit_content(2000))]


async def test_a_udp_flow_from_an_older_agent_is_refused():
    """UDP through the tunnel needs both agents at this version: an older source (the
    release before features relays UDP) would count the flow's window and get no credit."""
    a, b = session("a", features=OLD), session("b")
    relay = ConnectRelay({"a": a, "b": b}, lambda: NODES)
    relay.request(a, connect("10.42.1.7", 53, protocol="udp"))
    [err] = await sent(a)
    assert (err.route.operation, err.content["code"]) == (FRAME_ERROR, 501)
    assert await sent(b) == []


async def test_a_udp_flow_to_an_older_agent_is_refused():
    a, b = session("a"), session("b", features=OLD)
    relay = ConnectRelay({"a": a, "b": b}, lambda: NODES)
    req = connect("10.42.1.7", 53, protocol="udp", flow=True)
    relay.request(a, req)
    [err] = await sent(a)
    assert (err.route.operation, err.content["code"]) == (FRAME_ERROR, 501)
    assert "does not relay UDP" in err.content["message"]
    assert await sent(b) == []  # an older agent would have opened a TCP connection


async def test_a_udp_window_counts_each_datagram_with_its_overhead():
    a, b, req, opened = await relayed(protocol="udp")
    assert opened.content == {"ip": "10.42.1.7", "port": 8080, "protocol": "udp", "flow": True}
    empty = data_content(b"")
    for _ in range(STREAM_WINDOW // DATAGRAM_OVERHEAD):  # a window of empty datagrams
        nodestreams.deliver(a, stream_frame(req.id, FRAME_DATA, empty, source=EDGE))
    assert len(await sent(b)) == STREAM_WINDOW // DATAGRAM_OVERHEAD
    nodestreams.deliver(a, stream_frame(req.id, FRAME_DATA, empty, source=EDGE))
    ends = await sent(b)
    assert [m.route.operation for m in ends] == [FRAME_ERROR, FRAME_CLOSE]
    assert ends[0].content["code"] == 502


async def test_a_lost_tunnel_ends_the_other_side_with_an_error():
    a, b, _, opened = await relayed()
    nodestreams.tunnel_lost(a)
    ops = [(m.route.operation, m.header.parent_id) for m in await sent(b)]
    assert ops == [(FRAME_ERROR, opened.id), (FRAME_CLOSE, opened.id)]


@pytest.mark.parametrize("ip,port,connected,code", [
    ("10.42.9.1", 80, True, 404),   # no node's pod CIDR
    ("10.42.0.5", 80, True, 400),   # the asking node's own
    ("10.42.1.5", 0, True, 400),    # not a port
    ("10.42.1.5", 80, False, 503),  # the node is not connected
])
async def test_a_request_that_cannot_be_served_gets_an_error(ip, port, connected, code):
    a, b = session("a"), session("b", connected)
    relay = ConnectRelay({"a": a, "b": b}, lambda: NODES)
    req = connect(ip, port)
    relay.request(a, req)
    [err] = await sent(a)
    assert (err.header.parent_id, err.route.operation, err.content["code"]) == \
        (req.id, FRAME_ERROR, code)
    assert not a.streams and not b.streams
