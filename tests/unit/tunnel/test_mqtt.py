"""The MQTT messages of the tunnel (k3py.tunnel.mqtt): summaries and tail entries survive a
round trip, and what breaks the shape or the bounds is refused; topic filters are checked and
a tail's rate is held to 1..MAX_TAIL_RATE."""

from __future__ import annotations

import pytest

from k3py.tunnel.mqtt import (
    DEFAULT_FILTER,
    MAX_TAIL_RATE,
    MAX_TOPICS,
    ClientInfo,
    MqttSummary,
    TailEntry,
    TailRequest,
    TopicRate,
    mqtt_resource,
    valid_topic_filter,
)

pytestmark = pytest.mark.unit


def _summary(**kw) -> MqttSummary:
    return MqttSummary(**{"timestamp": 1.5, "window": 10.0, "rate": 2.0, "received": 3,
                          "published": 4, "errors": 1,
                          "topics": (TopicRate("$hw/events/device/d/twin/update", 2.0, 7),),
                          "clients": (ClientInfo("mapper", "127.0.0.1:4000", 9.0),),
                          "client_count": 1, **kw})


def test_round_trips():
    assert mqtt_resource("n1") == "mqtt//n1"
    for s in (_summary(), _summary(clients=None, client_count=0), _summary(tails=2)):
        assert MqttSummary.from_content(s.to_content()) == s
    e = TailEntry(1.0, "error", "$hw/events/device/d/twin/update/result", 30, "{}", ("ns", "d"))
    assert TailEntry.from_content(e.to_content()) == e


@pytest.mark.parametrize("change", [
    {"topics": "x"}, {"window": 0}, {"rate": -1}, {"received": True}, {"clients": {}},
    {"topics": [{"topic": "t", "rate": 1, "total": 1}] * (MAX_TOPICS + 1)},
    {"clients": [{"id": 5}]},
])
def test_bad_summaries_are_refused(change):
    with pytest.raises(ValueError):
        MqttSummary.from_content({**_summary().to_content(), **change})


@pytest.mark.parametrize("f, ok", [
    ("$hw/events/device/#", True), ("$hw/events/device/+/twin/update", True), ("#", True),
    ("a/#/b", False), ("a/b#", False), ("a/x+/b", False), ("", False), ("a" * 300, False),
])
def test_topic_filters(f, ok):
    assert valid_topic_filter(f) is ok


def test_tail_requests():
    assert TailRequest.from_content({}) == TailRequest(DEFAULT_FILTER, MAX_TAIL_RATE)
    assert TailRequest.from_content({"filter": "#", "rate": 10_000}).rate == MAX_TAIL_RATE
    assert TailRequest.from_content({"rate": 0}).rate == 1
    with pytest.raises(ValueError, match="not an MQTT topic filter"):
        TailRequest.from_content({"filter": "a/#/b"})
