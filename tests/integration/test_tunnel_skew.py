"""A server upgraded before its agents: a real `k3py server` with agents that speak the tunnel
as it was before tunnel features, in both its older forms: from before flow control (it never
sends nor expects a credit frame) and the release before features (8ad632f: it names no
features but flow-controls every stream, waiting for credit and granting it). Each old agent
here is that protocol written out with the websocket library: it joins for a node
certificate, dials the tunnel without the features header, ignores the server's hello (an
unknown tunnel message to it) and ACKs what it persists.

Checked: kubectl port-forward to a pod on an old node moves 1 MiB each way (before tunnel
features: the upload stopped after one 256 KiB window, waiting for credit, and the download
ended with an error); a connection relayed from one node to an old one moves 1 MiB each way
(before: 502 after a window), also from a node that asked for flow control, which the server
tells it is off; a UDP flow to an old node is refused, not opened as TCP. The other way round
(an agent upgraded before its server) is tests/unit/agent/test_tunnel_old_server.py's, with
the real agent against a server speaking the old protocol; both old ends' streams are
tests/tunnelpeers.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import aiohttp
import pytest

from k3py.agent.join import join, ssl_context
from k3py.tunnel import framing
from k3py.tunnel.message import (
    EDGE,
    GROUP_RESOURCE,
    GROUP_TUNNEL,
    OP_KEEPALIVE,
    Message,
    ack_for,
    keepalive,
    stream_frame,
)
from k3py.tunnel.protocol import (
    FEATURES_HEADER,
    FRAME_CLOSE,
    FRAME_DATA_CLOSE,
    FRAME_ERROR,
    FRAME_FLOW,
    RESUME_HEADER,
    STREAM_CONNECT,
    STREAM_PORTFORWARD,
    TUNNEL_PATH,
    features_header,
)
from tests.harness import wait_for
from tests.integration.agents import port_forward, stop_proc
from tests.tunnelpeers import MIB, OldTunnelEnd

pytestmark = pytest.mark.integration

DEADLINE = 20.0  # seconds for any one exchange: a stream stuck waiting for credit fails here


class Agent(OldTunnelEnd):
    """A node's tunnel, spoken by the test: the old protocol, or (`features`) a newer agent's
    dial (`counts`: see OldTunnelEnd). It answers keepalives and ACKs resources."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, counts: bool = False) -> None:
        super().__init__(ws, EDGE, counts)
        self.tunnel_ops: list[str] = []  # the link messages the server sent (the hello)
        self._reader = asyncio.create_task(self.read())

    async def on_link(self, msg: Message) -> None:
        if msg.route.group == GROUP_TUNNEL:
            self.tunnel_ops.append(msg.route.operation)
            if msg.route.operation == OP_KEEPALIVE:
                await self.send(keepalive(msg.content, source=EDGE))
        elif msg.route.group == GROUP_RESOURCE:
            await self.send(ack_for([msg.id], source=EDGE))  # "persisted"

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()


@pytest.fixture(scope="module")
def nodes(server) -> dict[str, str]:
    """Three Nodes and their pod CIDRs (the server's IPAM gives each one)."""
    names = ("old-a", "old-b", "new-c")
    server.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}}) for n in names))
    cidrs: dict[str, str] = {}

    def allocated() -> bool:
        items = server.kubectl_json("get", "nodes")["items"]
        cidrs.update({n["metadata"]["name"]: n["spec"].get("podCIDR", "") for n in items})
        return all(cidrs.get(n) for n in names)
    wait_for(allocated, 20, 0.1, "pod CIDRs for the test nodes")
    return cidrs


@pytest.fixture(scope="module")
def homes(tmp_path_factory) -> Path:
    """The test agents' data dirs: one per node name for the module (its node password)."""
    return tmp_path_factory.mktemp("agents")


@contextlib.asynccontextmanager
async def dialled(server, node: str, tmp: Path, features: str | None = None,
                  counts: bool = False):
    """Node `node`'s tunnel: joined with the server's token, dialled without the features
    header (an old agent) or with `features`; `counts`: see Agent."""
    async with aiohttp.ClientSession() as session:
        creds = await join(session, server.url, server.join_token(), node, str(tmp / node))
        headers = {RESUME_HEADER: "0"}
        if features is not None:
            headers[FEATURES_HEADER] = features
        ws = await session.ws_connect(server.url + TUNNEL_PATH, ssl=ssl_context(creds),
                                      protocols=(framing.SUBPROTOCOL,), headers=headers,
                                      max_msg_size=framing.MAX_FRAME_BYTES)
        agent = Agent(ws, counts)
        try:
            yield agent
        finally:
            await agent.close()


def pod_ip(cidr: str) -> str:
    return cidr.rsplit(".", 1)[0] + ".7"


async def within(aw, what: str):
    try:
        return await asyncio.wait_for(aw, DEADLINE)
    except TimeoutError:
        raise AssertionError(f"{what}: nothing for {DEADLINE:.0f} s (waiting for credit?)") \
            from None


OLD = pytest.mark.parametrize("counts", [False, True],
                              ids=["before-flow-control", "release-before-features"])


@OLD
async def test_port_forward_to_an_old_agent_moves_a_mebibyte_each_way(server, nodes, homes,
                                                                      counts):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "on-old"},
           "spec": {"nodeName": "old-a", "containers": [{"name": "c", "image": "none"}]}}
    await asyncio.to_thread(server.kubectl, "apply", "-f", "-", input=json.dumps(pod))
    await asyncio.to_thread(server.kubectl, "patch", "pod", "on-old", "--subresource=status",
                            "--type=merge", "-p", '{"status": {"phase": "Running"}}')
    async with dialled(server, "old-a", homes, counts=counts) as old:
        proc, local = await asyncio.to_thread(port_forward, server, "pod/on-old", 8080)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            req = await within(old.requests.get(), "the port-forward request")
            assert req.route.operation == STREAM_PORTFORWARD
            assert req.content["flow"] is False, req.content  # the agent speaks no credit
            writer.write(bytes(MIB))  # up: the server must not wait for the old agent's credit
            await within(old.receive_bytes(req.id, MIB), "the upload")
            # down: credit from the server all the same (the counting agent waits for it)
            await within(old.send_bytes(req.id, MIB), "the download's credit")
            assert len(await within(reader.readexactly(MIB), "the download")) == MIB
            await old.send(stream_frame(req.id, FRAME_CLOSE, source=EDGE))
            writer.close()
        finally:
            stop_proc(proc)
    assert old.tunnel_ops[0] == "hello"  # sent first; an old agent just ignores it


@OLD
@pytest.mark.parametrize("source_features", [None, features_header()], ids=["old", "new"])
async def test_a_connection_to_an_old_agent_is_relayed_without_flow_control(
        server, nodes, homes, source_features, counts):
    """Lenient: the relay counts no window but passes credit on both ways (here the source
    counts as the target does: a new agent grants on a lenient stream too)."""
    source_name = "old-a" if source_features is None else "new-c"
    async with dialled(server, source_name, homes, source_features, counts) as source, \
            dialled(server, "old-b", homes, counts=counts) as target:
        request = {"ip": pod_ip(nodes["old-b"]), "port": 80}
        if source_features is not None:
            request["flow"] = True  # a newer agent asks; the server answers it is off
        sid = await source.open(STREAM_CONNECT, request)
        opened = await within(target.requests.get(), "the connect request at the target")
        assert opened.content["flow"] is False, opened.content
        if source_features is not None:
            op, content = await within(source.streams[sid].get(), "the flow frame")
            assert (op, content) == (FRAME_FLOW, {"flow": False})
        await within(asyncio.gather(source.send_bytes(sid, MIB),
                                    target.send_bytes(opened.id, MIB),
                                    target.receive_bytes(opened.id, MIB),
                                    source.receive_bytes(sid, MIB)), "1 MiB each way")
        await source.send(stream_frame(sid, FRAME_DATA_CLOSE, source=EDGE))
        op, _ = await within(target.streams[opened.id].get(), "the half-close")
        assert op == FRAME_DATA_CLOSE
        await target.send(stream_frame(opened.id, FRAME_CLOSE, source=EDGE))
        op, _ = await within(source.streams[sid].get(), "the close")
        assert op == FRAME_CLOSE


async def test_a_udp_flow_to_an_old_agent_is_refused(server, nodes, homes):
    async with dialled(server, "new-c", homes, features_header()) as new, \
            dialled(server, "old-b", homes) as old:
        sid = await new.open(STREAM_CONNECT, {"ip": pod_ip(nodes["old-b"]), "port": 53,
                                              "protocol": "udp", "flow": True})
        op, content = await within(new.streams[sid].get(), "the refusal")
        assert op == FRAME_ERROR and content["code"] == 501, content
        assert "does not relay UDP" in content["message"]
        # the old agent got nothing (it would have opened a TCP connection): the first
        # request it gets is the TCP connection asked for after the refusal
        await new.open(STREAM_CONNECT, {"ip": pod_ip(nodes["old-b"]), "port": 80})
        first = await within(old.requests.get(), "the TCP connect request")
        assert first.content == {"ip": pod_ip(nodes["old-b"]), "port": 80, "flow": False}
    log = server.log_path.read_text()
    assert "does not relay UDP" in log, log[-2000:]

