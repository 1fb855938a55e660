"""The server's side of the dashboard's MQTT view: the newest summary per node (forgotten
when asked, bounded), the Device a tail message's topic names (both topic forms, node
topics), and whether a user may see its payload, asked of a real AuthorizerChain (a rule that
lets alice `get` one Device and nothing else) and kept for a few seconds."""

from __future__ import annotations

import pytest

from k3py.server.apiserver.auth import AuthorizerChain, User
from k3py.server.dashboard.mqtt import ACCESS_TTL, PayloadAccess, device_of
from k3py.server.edge import mqttstats
from k3py.server.edge.mqttstats import MqttFigures
from k3py.tunnel.mqtt import MqttSummary

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
