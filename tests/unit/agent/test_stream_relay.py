"""A TCP connection relayed over a flow-controlled connect stream (streamrelay.py), with a real
socket on one side and the stream's frames on the other: the relay sends no more than the
window until the other end grants more, grants back what it wrote to the connection, and
ends the stream when the other end overruns its window; without flow control (a request from
an older server, or the server's "flow" frame turning it off) bytes go as they come; and a UDP
flow, one datagram per frame, until the stream closes or the flow is idle, its window counting
each datagram with its overhead."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

import pytest

from k3py.agent.streamrelay import DatagramQueue, relay_datagrams, relay_stream
from k3py.tunnel.flowcontrol import DATAGRAM_OVERHEAD, STREAM_WINDOW, datagram_cost
from k3py.tunnel.message import Message
from k3py.tunnel.protocol import (
    FRAME_CLOSE,
    FRAME_CREDIT,
    FRAME_DATA,
    FRAME_ERROR,
    FRAME_FLOW,
    content_credit,
    content_data,
    credit_content,
    data_content,
    flow_off_content,
)

pytestmark = pytest.mark.unit


class Frames:
    """Stands in for EdgeHub's send_live: what the relay sends up the tunnel."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send_live(self, msg: Message) -> bool:
        self.sent.append(msg)
        return True

    def total(self, op: str) -> int:
        return sum(len(content_data(m.content)) if op == FRAME_DATA else
                   content_credit(m.content) for m in self.sent if m.route.operation == op)


async def _until(pred, what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def relayed(flow_control: bool = True):
    """(frames sent, the stream's input queue, the far end of the relayed connection)."""
    accepted: asyncio.Queue = asyncio.Queue()
    server = await asyncio.start_server(lambda r, w: accepted.put_nowait((r, w)), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    peer = await accepted.get()
    hub, inputs = Frames(), asyncio.Queue()
    task = asyncio.create_task(relay_stream(hub, "s1", inputs, reader, writer,  # type: ignore
                                            flow_control=flow_control))
    try:
        yield hub, inputs, peer, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        peer[1].close()
        server.close()


async def test_the_sender_stops_at_the_window_until_credit_comes():
    async with relayed() as (hub, inputs, (_, peer_w), _task):
        peer_w.write(b"x" * (4 * STREAM_WINDOW))
        await _until(lambda: hub.total(FRAME_DATA) == STREAM_WINDOW, "a window of data")
        for _ in range(20):  # the relay had every chance to send more, and did not
            await asyncio.sleep(0.01)
        assert hub.total(FRAME_DATA) == STREAM_WINDOW
        inputs.put_nowait((FRAME_CREDIT, credit_content(100_000)))
        await _until(lambda: hub.total(FRAME_DATA) == STREAM_WINDOW + 100_000, "credited data")


async def test_what_is_written_to_the_connection_is_granted_back_intact():
    async with relayed() as (hub, inputs, (peer_r, _), _task):
        chunks = [bytes([i]) * 50_000 for i in range(5)]  # within one window
        for c in chunks:
            inputs.put_nowait((FRAME_DATA, data_content(c)))
        got = await asyncio.wait_for(peer_r.readexactly(250_000), 5)
        assert hashlib.sha256(got).digest() == hashlib.sha256(b"".join(chunks)).digest()
        # a quarter window at a time: 100,000 twice, 50,000 still to grant
        await _until(lambda: hub.total(FRAME_CREDIT) == 200_000, "the grants")


async def test_an_overrun_window_ends_the_stream():
    async with relayed() as (hub, inputs, _, task):
        for _ in range(STREAM_WINDOW // 65536 + 1):
            inputs.put_nowait((FRAME_DATA, data_content(b"y" * 65536)))
        await asyncio.wait_for(task, 5)
        errors = [m.content for m in hub.sent if m.route.operation == FRAME_ERROR]
        assert [e["code"] for e in errors] == [502], hub.sent


async def test_a_lenient_stream_goes_both_ways_without_credit_and_grants_all_the_same():
    # a request from a server older than tunnel features: one from before flow control sends
    # no credit (nothing waits for it, an overrun is no error); the release before features
    # waits for credit, so what comes in is granted back all the same
    async with relayed(flow_control=False) as (hub, inputs, (peer_r, peer_w), _task):
        peer_w.write(b"x" * (4 * STREAM_WINDOW))
        await _until(lambda: hub.total(FRAME_DATA) == 4 * STREAM_WINDOW, "all the data up")
        for _ in range(4 * STREAM_WINDOW // 65536):
            inputs.put_nowait((FRAME_DATA, data_content(b"y" * 65536)))
        got = await asyncio.wait_for(peer_r.readexactly(4 * STREAM_WINDOW), 5)
        assert got == b"y" * (4 * STREAM_WINDOW)
        await _until(lambda: hub.total(FRAME_CREDIT) == 4 * STREAM_WINDOW, "the grants")
        assert not [m for m in hub.sent if m.route.operation == FRAME_ERROR]


async def test_a_lenient_stream_keeps_to_the_window_once_the_peer_sends_credit():
    # the release before features counts the window and ends a stream that overruns it:
    # once its credit shows that it counts, the sender waits for it
    async with relayed(flow_control=False) as (hub, inputs, (_, peer_w), _task):
        inputs.put_nowait((FRAME_CREDIT, credit_content(0)))
        await asyncio.sleep(0.05)
        peer_w.write(b"x" * (4 * STREAM_WINDOW))
        await _until(lambda: hub.total(FRAME_DATA) == STREAM_WINDOW, "a window of data")
        await asyncio.sleep(0.1)
        assert hub.total(FRAME_DATA) == STREAM_WINDOW
        inputs.put_nowait((FRAME_CREDIT, credit_content(100_000)))
        await _until(lambda: hub.total(FRAME_DATA) == STREAM_WINDOW + 100_000, "credited data")


async def test_a_flow_frame_turns_flow_control_off():
    # the server: the other node's agent is older; a sender waiting at the window goes on
    async with relayed() as (hub, inputs, (_, peer_w), _task):
        peer_w.write(b"x" * (4 * STREAM_WINDOW))
        await _until(lambda: hub.total(FRAME_DATA) == STREAM_WINDOW, "a window of data")
        inputs.put_nowait((FRAME_FLOW, flow_off_content()))
        await _until(lambda: hub.total(FRAME_DATA) == 4 * STREAM_WINDOW, "the rest, uncounted")


async def test_a_udp_window_counts_each_datagram_with_its_overhead():
    to_pod: list[bytes] = []
    hub, inputs, received = Frames(), asyncio.Queue(), asyncio.Queue()
    task = asyncio.create_task(relay_datagrams(hub, "s1", inputs, to_pod.append,  # type: ignore
                                               received, idle=30, flow_control=True))
    fits = STREAM_WINDOW // DATAGRAM_OVERHEAD
    try:
        for _ in range(fits + 10):  # empty datagrams: a window holds `fits`, the rest dropped
            received.put_nowait(b"")
        await _until(received.empty, "the datagrams taken")
        await asyncio.sleep(0.01)
        assert len([m for m in hub.sent if m.route.operation == FRAME_DATA]) == fits
        quarter = STREAM_WINDOW // 4 // DATAGRAM_OVERHEAD  # one-byte ones coming in: 256
        for _ in range(quarter):  # bytes alone, 256 would be far from a quarter window
            inputs.put_nowait((FRAME_DATA, data_content(b"1")))
        await _until(lambda: hub.total(FRAME_CREDIT) > 0, "a grant")
        assert hub.total(FRAME_CREDIT) == quarter * datagram_cost(1)
        assert to_pod[0] == b"1"
    finally:
        task.cancel()


async def test_a_udp_flow_relays_datagrams_both_ways_until_idle():
    loop = asyncio.get_running_loop()
    pod_got: asyncio.Queue = asyncio.Queue()
    pod, _ = await loop.create_datagram_endpoint(
        lambda: DatagramQueue(pod_got), local_addr=("127.0.0.1", 0))
    received: asyncio.Queue = asyncio.Queue()
    flow, _ = await loop.create_datagram_endpoint(
        lambda: DatagramQueue(received), remote_addr=pod.get_extra_info("sockname"))
    hub, inputs = Frames(), asyncio.Queue()
    task = asyncio.create_task(relay_datagrams(hub, "s1", inputs, flow.sendto,  # type: ignore
                                               received, idle=0.5))
    try:
        inputs.put_nowait((FRAME_DATA, data_content(b"query")))
        assert await asyncio.wait_for(pod_got.get(), 5) == b"query"
        pod.sendto(b"answer", flow.get_extra_info("sockname"))
        await _until(lambda: hub.total(FRAME_DATA) == 6, "the answer up the stream")
        await asyncio.wait_for(task, 5)  # idle: the flow ends
        task = asyncio.create_task(relay_datagrams(hub, "s2", inputs, flow.sendto,  # type: ignore
                                                   received, idle=30))
        inputs.put_nowait((FRAME_CLOSE, None))
        await asyncio.wait_for(task, 5)  # the stream closed
    finally:
        task.cancel()
        pod.close()
        flow.close()
