"""Counting the node's MQTT traffic (traffic.py): messages per second by topic over the last
WINDOW seconds, totals in, out and error answers (a real EventBus and device twin answering a
bad request), the topics bounded (idle ones make room, the rest share OTHER_TOPICS), the
summary's lists bounded, and the tail's rate limit."""

from __future__ import annotations

import pytest

from k3py.agent.devices.eventbus import EventBus
from k3py.agent.devices.traffic import (
    MAX_TRACKED,
    OTHER_TOPICS,
    WINDOW,
    RateLimit,
    TrafficCounter,
)
from k3py.agent.devices.twin import DeviceTwins
from k3py.tunnel.mqtt import MAX_CLIENTS, MAX_TOPICS, ClientInfo, MqttSummary

pytestmark = pytest.mark.unit

UPDATE = "$hw/events/device/default/thermo/twin/update"
RESULT = "$hw/events/device/default/thermo/twin/update/result"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_rates_by_topic_over_the_window_and_totals():
    clock = Clock()
    counter = TrafficCounter(clock)
    for _ in range(WINDOW):  # one update a second for a whole window, each answered
        counter.tap("in", UPDATE)
        counter.tap("out", RESULT)
        clock.now += 1
    counter.tap("in", UPDATE)
    s = counter.summary(None)
    rates = {t.topic: (t.rate, t.total) for t in s.topics}
    assert rates[UPDATE] == (1.0, WINDOW + 1)  # the oldest second left the window
    assert rates[RESULT] == (0.9, WINDOW)
    assert s.rate == pytest.approx(1.9) and s.window == WINDOW
    assert (s.received, s.published, s.errors) == (WINDOW + 1, WINDOW, 0)
    assert s.clients is None  # an external broker: not known
    clock.now += 2 * WINDOW  # quiet: the rates fall to 0, the totals stay
    s = counter.summary(None)
    assert s.rate == 0 and {t.topic: t.total for t in s.topics}[UPDATE] == WINDOW + 1


async def test_an_error_answer_of_the_bus_counts_as_an_error():
    twins = DeviceTwins("n1")
    bus = EventBus(twins)  # not started: no broker, the answer goes to the taps only
    counter = TrafficCounter()
    seen: list[tuple[str, str]] = []
    bus.taps += [counter.tap, lambda d, topic, _p: seen.append((d, topic))]
    await bus.apply(twins.handle(UPDATE, b"not json"))
    assert seen == [("error", RESULT)]
    assert (counter.published, counter.errors) == (1, 1)


def test_topics_are_bounded_and_idle_ones_make_room():
    clock = Clock()
    counter = TrafficCounter(clock)
    for i in range(MAX_TRACKED + 5):
        counter.tap("in", f"$hw/events/device/d{i}/twin/update")
    assert counter.tracked() == MAX_TRACKED + 1  # and OTHER_TOPICS
    s = counter.summary([])
    assert len(s.topics) == MAX_TOPICS
    assert s.topics[0].topic == OTHER_TOPICS and s.topics[0].total == 5  # the busiest
    assert s.rate == pytest.approx((MAX_TRACKED + 5) / WINDOW)
    clock.now += WINDOW + 1  # all idle now: a new topic is counted on its own again
    counter.tap("in", "$hw/events/device/new/twin/update")
    assert counter.tracked() == 1
    assert counter.summary([]).topics[0].topic == "$hw/events/device/new/twin/update"


def test_clients_are_listed_up_to_the_bound_and_counted():
    clients = [ClientInfo(f"mapper-{i}", "127.0.0.1:5000", 1.0) for i in range(MAX_CLIENTS + 3)]
    s = TrafficCounter().summary(clients)
    assert len(s.clients) == MAX_CLIENTS and s.client_count == MAX_CLIENTS + 3
    assert MqttSummary.from_content(s.to_content()) == s


def test_rate_limit_allows_a_burst_then_the_rate():
    clock = Clock()
    limit = RateLimit(50, clock)
    assert sum(limit.allow() for _ in range(80)) == 50
    clock.now += 0.5
    assert sum(limit.allow() for _ in range(80)) == 25
    clock.now += 10
    assert sum(limit.allow() for _ in range(80)) == 50  # never more than one second's worth
