"""What goes down the tunnel for NetworkPolicy, over a real Registry, its informers and real
node sessions: every node gets the policies and, while one exists, the namespaces' names and
labels and every pod's peer view (no more of the pod) once it has an IP, a pod's view again
only when it changed (not at each status report); the first policy comes after all the views
(one partial sync), the last one's deletion before their removal, also to a node offline
meanwhile; with --disable-network-policy none of them (the node holds empty lists)."""

from __future__ import annotations

import pytest

from k3py.agent.metamanager import MetaManager
from k3py.server.edge.downstream import DownstreamSync
from k3py.server.edge.sessions import NodeSession
from k3py.tunnel.message import OP_DELETE, OP_INSERT, OP_SYNC, Message
from k3py.tunnel.protocol import NETWORK_POLICY_KINDS, POD_PEERS_KIND, full_sync
from tests.unit.conftest import eventually
from tests.unit.server.test_downstream_volumes import _drain, _flushed, _pod

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


def _names(objs: list[dict]) -> set[str]:
    return {o["metadata"]["name"] for o in objs}


async def _without_policy(env) -> tuple[DownstreamSync, dict[str, NodeSession]]:
    """Node b's pod pb with an IP, no NetworkPolicy; node a's session drained."""
    pods = env.res("pods")
    await env.registry.create(pods, "default", _pod("pb", "b"))
    await env.registry.update_with(pods, "default", "pb", lambda p: {
        **p, "status": {"phase": "Running", "podIP": "10.42.1.5"}}, subresource="status")
    sessions = {n: NodeSession(n) for n in ("a", "b")}
    sync = DownstreamSync(env.ctx.informers, sessions, None, lambda n: False)
    sync.start()
    await env.ctx.informers.wait_synced()
    await eventually(lambda: (sync.pods.get("default", "pb") or {}).get("status"))
    await _drain(sessions["a"])
    return sync, sessions


async def _lose_ip(env, sync: DownstreamSync, name: str) -> None:
    """The pod's IP gone (it restarts elsewhere): its view is of no use any more."""
    await env.registry.update_with(env.res("pods"), "default", name, lambda p: {
        **p, "status": {"phase": "Pending"}}, subresource="status")
    await eventually(lambda: "podIP" not in sync.pods.get("default", name)["status"])


async def _queued(session: NodeSession, count: int) -> list[Message]:
    got: list[Message] = []

    async def enough() -> bool:
        got.extend(await _flushed(session))
        return len(got) >= count
    await eventually(enough, what=f"{count} messages queued")
    return got


async def test_peer_views_go_only_while_a_policy_exists(env):
    sync, sessions = await _without_policy(env)
    assert not sync.peers_sent
    snap = sync.snapshot("a").content
    assert all(snap[k] == [] for k in NETWORK_POLICY_KINDS)
    await env.registry.create(env.res("namespaces"), None, {"metadata": {"name": "other"}})
    await env.registry.create(env.res("pods"), "default", _pod("pc", "b"))
    await eventually(lambda: sync.cluster_wide["namespaces"].get(None, "other"))
    await eventually(lambda: sync.pods.get("default", "pc"))
    assert await _drain(sessions["a"]) == []  # no view of either: no policy needs it

    policies = env.res("networkpolicies", "networking.k8s.io")
    await env.registry.create(policies, "default", POLICY)
    views, policy = await _queued(sessions["a"], 2)
    assert views.route.operation == OP_SYNC and not full_sync(views.content)
    assert set(views.content) == {"namespaces", POD_PEERS_KIND}
    assert _names(views.content[POD_PEERS_KIND]) == {"pb"}  # (pc has no IP)
    assert {"default", "other"} <= _names(views.content["namespaces"])
    assert (policy.route.operation, policy.route.resource) == (
        OP_INSERT, "networkpolicies/default/deny")
    assert _names(sync.snapshot("a").content[POD_PEERS_KIND]) == {"pb"}

    await _lose_ip(env, sync, "pb")

    async def view_gone() -> bool:
        return (OP_DELETE, "podpeers/default/pb") in await _drain(sessions["a"])
    await eventually(view_gone)  # a change while a policy exists goes as itself

    await env.registry.delete(policies, "default", "deny")
    policy, views = await _queued(sessions["a"], 2)
    assert (policy.route.operation, policy.route.resource) == (
        OP_DELETE, "networkpolicies/default/deny")
    assert views.content == {"namespaces": [], POD_PEERS_KIND: []}
    assert not sync.peers_sent
    assert all(sync.snapshot("a").content[k] == [] for k in NETWORK_POLICY_KINDS)
    await sync.stop()


async def test_a_node_offline_while_policies_come_and_go_gets_the_last_views(env, tmp_path):
    """Node a is offline (nothing it was sent is ACKed) while the policy is created, pod pb
    loses its IP, the policy is deleted, pod pd given an IP and the policy created again: its queue
    then holds the views of that moment (the views' changes queued before are dropped), then
    the policy, and an agent's store that
    applies the queue (as after a resume) holds pd's view, not pb's."""
    sync, sessions = await _without_policy(env)
    pods, policies = env.res("pods"), env.res("networkpolicies", "networking.k8s.io")
    cache = sync.cluster_wide["networkpolicies"]
    await env.registry.create(policies, "default", POLICY)
    await eventually(lambda: sync.peers_sent)
    await _lose_ip(env, sync, "pb")
    await env.registry.delete(policies, "default", "deny")
    await eventually(lambda: not cache.cache)
    await env.registry.create(pods, "default", _pod("pd", "b"))
    await env.registry.update_with(pods, "default", "pd", lambda p: {
        **p, "status": {"phase": "Running", "podIP": "10.42.1.6"}}, subresource="status")
    await eventually(lambda: (sync.pods.get("default", "pd") or {}).get("status"))
    await env.registry.create(policies, "default", POLICY)
    await eventually(lambda: sync.peers_sent)

    queued = await _flushed(sessions["a"])
    assert [(m.route.operation, m.route.resource) for m in queued] == [
        (OP_SYNC, ""), (OP_INSERT, "networkpolicies/default/deny")]  # pb's change: dropped
    meta = MetaManager(str(tmp_path / "meta.db"))
    await meta.open()
    try:
        for msg in queued:
            assert await meta.apply(msg)
        assert _names(meta.objects(POD_PEERS_KIND)) == {"pd"}
        assert _names(meta.objects("networkpolicies")) == {"deny"}
    finally:
        await meta.close()
    await sync.stop()
