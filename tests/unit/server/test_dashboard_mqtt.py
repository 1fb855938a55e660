"""The server's side of the dashboard's MQTT view: a node's summary comes up its tunnel (its
own only; a malformed one is a 400, as a malformed usage report), the newest per node is kept
(forgotten when asked, bounded), the Device a tail message's topic names (both topic forms, node
topics), and whether a user may see its payload, asked of a real AuthorizerChain (a rule that
lets alice `get` one Device and nothing else) and kept for a few seconds; and how many tails
one user may follow through the other servers at once (a 429 beyond, before any peer is asked,
and their other users untouched)."""

from __future__ import annotations

import contextlib

import pytest

from k3py.api import errors
from k3py.server.apiserver.auth import Authenticator, AuthorizerChain, User
from k3py.server.bootstrap import authorizer_chain
from k3py.server.dashboard.mqtt import (
    ACCESS_TTL,
    MAX_PEER_TAILS_PER_USER,
    MqttFeeds,
    PayloadAccess,
    device_of,
)
from k3py.server.edge import mqttstats
from k3py.server.edge.cloudhub import CloudHub
from k3py.server.edge.mqttstats import MqttFigures
from k3py.server.edge.nodepassword import NodePasswords
from k3py.server.edge.peerrelay import PeerRelay
from k3py.server.edge.upstream import UpstreamWriter
from k3py.server.metrics.store import UsageStore
from k3py.tunnel.message import EDGE, GROUP_RESOURCE, OP_UPDATE, new_message
from k3py.tunnel.mqtt import MqttSummary, mqtt_resource
from k3py.tunnel.protocol import metrics_resource

pytestmark = pytest.mark.unit

ALICE = User("alice", ("system:authenticated",))
ADMIN = User("system:admin", ("system:masters",))
THERMO = "$hw/events/device/default/thermo/twin/update"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_figures_keep_the_newest_per_node_and_tell_listeners(monkeypatch):
    figures = MqttFigures()
    told: list[str] = []
    figures.listeners.add(told.append)
    figures.record("n1", MqttSummary(1.0, 10.0, 0.5, 1, 0, 0))
    figures.record("n1", MqttSummary(2.0, 10.0, 0.7, 2, 0, 0))
    assert figures.table()["n1"]["rate"] == 0.7 and told == ["n1", "n1"]
    figures.forget("n1")
    figures.forget("n1")  # once
    assert figures.table() == {} and told == ["n1", "n1", "n1"]
    monkeypatch.setattr(mqttstats, "MAX_NODES", 2)
    for node in ("a", "b", "c"):
        figures.record(node, MqttSummary(1.0, 10.0, 0.0, 0, 0, 0))
    assert sorted(figures.table()) == ["a", "b"]


def test_the_device_a_topic_names():
    assert device_of(THERMO, None) == ("default", "thermo")
    assert device_of("$hw/events/device/lab/thermo/twin/update/result", ("x", "y")) == \
        ("lab", "thermo")  # the namespaced form: the topic says it, whatever the node says
    assert device_of("$hw/events/device/thermo/twin/get", ("lab", "thermo")) == ("lab", "thermo")
    assert device_of("$hw/events/device/thermo/twin/get", ("lab", "other")) == \
        ("default", "thermo")
    assert device_of("$hw/events/node/n1/membership/get", None) == "node"
    assert device_of("sensors/raw", None) is None


def test_payloads_only_for_users_who_may_get_the_device():
    chain = AuthorizerChain()
    asked: list[tuple] = []

    def rule(a) -> bool:
        asked.append((a.user.name, a.verb, a.plural, a.namespace, a.name))
        return (a.user.name, a.verb, a.group, a.plural, a.namespace, a.name) == (
            "alice", "get", "devices.kubeedge.io", "devices", "default", "thermo")
    chain.add("test-rules", rule)
    clock = Clock()
    alice = PayloadAccess(chain, ALICE, clock)
    assert alice.allowed(THERMO, None)
    assert not alice.allowed("$hw/events/device/lab/thermo/twin/update", None)
    assert not alice.allowed("$hw/events/node/n1/membership/get/result", None)  # list devices
    assert not alice.allowed("sensors/raw", None)  # names no device: never shown
    n = len(asked)
    assert alice.allowed(THERMO, None) and len(asked) == n  # decided a moment ago
    clock.now += ACCESS_TTL + 1
    assert alice.allowed(THERMO, None) and len(asked) == n + 1  # asked again
    admin = PayloadAccess(chain, ADMIN, clock)
    assert admin.allowed("$hw/events/node/n1/membership/get/result", None)


async def test_summaries_come_up_the_tunnel_of_their_own_node_only(env):
    figures = MqttFigures()
    upstream = UpstreamWriter(env.registry, NodePasswords(env.registry), AuthorizerChain(),
                              usage=UsageStore(), mqtt=figures)

    def up(resource: str, content: object):
        return new_message(source=EDGE, group=GROUP_RESOURCE, operation=OP_UPDATE,
                           resource=resource, content=content)
    summary = MqttSummary(1.0, 10.0, 0.5, 5, 5, 1)
    await upstream.write("n1", up(mqtt_resource("n1"), summary.to_content()))
    assert figures.get("n1") == summary
    with pytest.raises(errors.StatusError) as e:
        await upstream.write("n1", up(mqtt_resource("n2"), summary.to_content()))
    assert e.value.code == 403 and "may not report MQTT of node n2" in e.value.message
    for resource, what in ((mqtt_resource("n1"), "MQTT"), (metrics_resource("n1"), "usage")):
        with pytest.raises(errors.StatusError) as e:
            await upstream.write("n1", up(resource, {"topics": "x"}))
        assert e.value.code == 400 and f"bad {what} report" in e.value.message
    assert figures.get("n1") == summary


async def test_a_users_tail_over_the_quota_is_refused_before_any_peer_is_asked(env):
    """A tab's tail of a node not connected here goes through a peer: 503 when none holds it
    (the quota given back), 429 for a user who follows MAX_PEER_TAILS_PER_USER already."""
    hub = CloudHub(env.registry, Authenticator(), informers=env.ctx.informers,
                   authorizer=AuthorizerChain())
    peers = PeerRelay(env.registry, None, "10.0.0.2", 6443,  # type: ignore[arg-type] - no
                      Authenticator())                      # peer is live: never connected
    feeds = MqttFeeds(authorizer_chain(env.ctx.informers), hub, 0.0, peers)

    async def tail(user: User) -> int | str:
        """The Status a tail ends with: its code, or its message for a 429."""
        with pytest.raises(errors.StatusError) as e:
            async for _ in feeds.tail(user, {"node": "n1"}):
                pass
        return e.value.message if e.value.code == 429 else e.value.code
    other = User("system:admin-2", ("system:masters",))
    assert await tail(ADMIN) == 503 and feeds.peer_tails.held(ADMIN.name) == 0
    with contextlib.ExitStack() as held:
        for _ in range(MAX_PEER_TAILS_PER_USER - 1):
            held.enter_context(feeds.peer_tails.hold(ADMIN.name))
        assert await tail(ADMIN) == 503  # the last one of the quota
        held.enter_context(feeds.peer_tails.hold(ADMIN.name))
        assert await tail(ADMIN) == (
            f"at most {MAX_PEER_TAILS_PER_USER} MQTT tails per user through the other servers "
            "at once: stop following another node's tail (in any tab) first")
        assert await tail(other) == 503
    assert await tail(ADMIN) == 503 and len(feeds.peer_tails) == 0
