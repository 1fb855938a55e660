"""The Nodes' route views on the tunnel, over a real Registry, its informers and real node
sessions: a Node goes down once it has a pod CIDR (not at its registration, then again), as one
message encoded once for every node, and not again at its status reports; the snapshots'
views follow."""

from __future__ import annotations

import pytest

from k3py.server.edge.downstream import DownstreamSync
from k3py.server.edge.sessions import NodeSession
from k3py.tunnel import framing
from k3py.tunnel.message import Message
from tests.unit.conftest import eventually

pytestmark = pytest.mark.unit


async def _sent(session: NodeSession) -> list[Message]:
    out: list[Message] = []

    async def write(msg: Message) -> None:
        out.append(msg)
    await session.queue.flush(write)
    return out


async def test_a_node_goes_down_once_it_has_a_pod_cidr(env):
    nodes = env.res("nodes")
    sessions = {n: NodeSession(n) for n in ("a", "b")}
    sync = DownstreamSync(env.ctx.informers, sessions, None, lambda n: False)
    sync.start()
    await env.ctx.informers.wait_synced()
    node = {"metadata": {"name": "n1"}, "status": {"addresses": [
        {"type": "InternalIP", "address": "10.0.0.1"}]}}
    await env.registry.create(nodes, None, node)
    await eventually(lambda: sync.cluster_wide["nodes"].get(None, "n1"))
    assert sync.snapshot("a").content["nodes"] == []
    assert [m for m in await _sent(sessions["a"]) if m.route.resource.startswith("nodes/")] \
        == []

    await env.registry.update_with(nodes, None, "n1", lambda n: {
        **n, "spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24"]}})
    await eventually(lambda: (sync.cluster_wide["nodes"].get(None, "n1").get("spec") or {})
                     .get("podCIDR"))
    sent = {n: [m for m in await _sent(s) if m.route.resource == "nodes//n1"]
            for n, s in sessions.items()}
    assert [m.content["spec"]["podCIDR"] for m in sent["a"]] == ["10.42.1.0/24"]
    assert sent["a"][0] is sent["b"][0]  # one message, its frame made once
    assert framing.decode(framing.encode(sent["a"][0])).content == sent["a"][0].content
    assert [n["metadata"]["name"] for n in sync.snapshot("a").content["nodes"]] == ["n1"]

    await env.registry.update_with(nodes, None, "n1", lambda n: {
        **n, "status": {**n["status"], "conditions": [{"type": "Ready", "status": "True"}]}},
        subresource="status")
    await eventually(lambda: sync.cluster_wide["nodes"].get(None, "n1")["status"]
                     .get("conditions"))
    assert [m for m in await _sent(sessions["b"]) if m.route.resource == "nodes//n1"] == []
    # the snapshots' views are made once for every node, and made again once one changed
    assert sync.snapshot("b").content["nodes"] == sync.snapshot("a").content["nodes"]
    await env.registry.delete(nodes, None, "n1", {"gracePeriodSeconds": 0})
    await eventually(lambda: sync.cluster_wide["nodes"].get(None, "n1") is None)
    assert sync.snapshot("a").content["nodes"] == []
    await sync.stop()
