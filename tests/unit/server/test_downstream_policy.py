"""What goes down the tunnel for NetworkPolicy, over a real Registry, its informers and real
node sessions: every node gets the policies, the namespaces' names and labels and every pod's
peer view (no more of the pod) once it has an IP, a pod's view again only when it changed (not
at each status report); with --disable-network-policy none of them (the node holds empty lists)."""

from __future__ import annotations

import pytest

from k3py.server.edge.downstream import DownstreamSync
from k3py.server.edge.sessions import NodeSession
from k3py.tunnel.protocol import NETWORK_POLICY_KINDS
from tests.unit.conftest import eventually
from tests.unit.server.test_downstream_volumes import _drain, _pod

pytestmark = pytest.mark.unit

POLICY = {"metadata": {"name": "deny"}, "spec": {"podSelector": {}}}


async def _setup(env, network_policy: bool) -> tuple[DownstreamSync, dict[str, NodeSession]]:
    await env.registry.create(env.res("networkpolicies", "networking.k8s.io"), "default",
                              POLICY)
    await env.registry.create(env.res("pods"), "default", _pod("pb", "b"))
    sessions = {n: NodeSession(n) for n in ("a", "b")}
    sync = DownstreamSync(env.ctx.informers, sessions, None, lambda n: False,
                          network_policy=network_policy)
    sync.start()
    await env.ctx.informers.wait_synced()
    await eventually(lambda: sync.pods.get("default", "pb"))
    return sync, sessions


async def test_every_node_gets_policies_and_peer_views(env):
    sync, sessions = await _setup(env, True)
    await eventually(lambda: sync.cluster_wide["networkpolicies"].get("default", "deny"))
    snap = sync.snapshot("a").content
    assert [p["metadata"]["name"] for p in snap["networkpolicies"]] == ["deny"]
    assert snap["podpeers"] == []  # node b's pod has no IP yet: no peer of any rule
    assert "default" in [n["metadata"]["name"] for n in snap["namespaces"]]
    assert set(snap["namespaces"][0]) == {"metadata"}
    for s in sessions.values():
        await _drain(s)

    pods = env.res("pods")
    await env.registry.update_with(pods, "default", "pb", lambda p: {
        **p, "status": {"phase": "Running"}}, subresource="status")
    await eventually(lambda: sync.pods.get("default", "pb").get("status", {}).get("phase"))
    assert await _drain(sessions["a"]) == []  # a status report with no IP: no new view
    await env.registry.update_with(pods, "default", "pb", lambda p: {
        **p, "status": {"phase": "Running", "podIP": "10.42.1.5"}}, subresource="status")

    async def peer_sent() -> bool:
        return ("insert", "podpeers/default/pb") in await _drain(sessions["a"])
    await eventually(peer_sent)
    snap = sync.snapshot("a").content
    assert [p["metadata"]["name"] for p in snap["podpeers"]] == ["pb"]
    assert "image" not in str(snap["podpeers"])
    await env.registry.update_with(pods, "default", "pb", lambda p: {
        **p, "status": {"phase": "Running", "podIP": "10.42.1.5", "hostIP": "10.0.0.2"}},
        subresource="status")

    async def hostip_seen() -> bool:
        return bool(sync.pods.get("default", "pb")["status"].get("hostIP"))
    await eventually(hostip_seen)
    assert await _drain(sessions["a"]) == []  # the same view
    await env.registry.update_with(pods, "default", "pb", lambda p: {
        **p, "status": {"phase": "Pending"}}, subresource="status")

    async def peer_gone() -> bool:
        return ("delete", "podpeers/default/pb") in await _drain(sessions["a"])
    await eventually(peer_gone)  # its IP is gone (the pod restarts elsewhere): so is its view
    await sync.stop()


async def test_disabled_sends_none(env):
    sync, _ = await _setup(env, False)
    snap = sync.snapshot("a").content
    assert all(snap[k] == [] for k in NETWORK_POLICY_KINDS)
    await sync.stop()
