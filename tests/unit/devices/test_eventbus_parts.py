"""The event bus's parts that need no broker: the once-a-minute log limiter, external broker
URLs, and the mode checks."""

from __future__ import annotations

import pytest

from k3py.agent.devices.eventbus import EventBus, ExternalBroker, LogLimiter
from k3py.agent.devices.twin import DeviceTwins

pytestmark = pytest.mark.unit


def test_log_limiter_once_per_key_per_minute():
    lim = LogLimiter(60)
    assert lim.allow("dev-a", 0.0) and not lim.allow("dev-a", 30.0)
    assert lim.allow("dev-b", 30.0)
    assert lim.allow("dev-a", 60.0) and not lim.allow("dev-a", 119.0)


@pytest.mark.parametrize("url, expected", [
    ("tcp://10.0.0.5:1883", ("10.0.0.5", 1883, False)),
    ("tcp://broker", ("broker", 1883, False)),
    ("ssl://broker", ("broker", 8883, True)),
    ("mqtts://broker:8884", ("broker", 8884, True)),
])
def test_external_broker_urls(url, expected):
    assert ExternalBroker(url).address() == expected


@pytest.mark.parametrize("url", ["http://broker:1883", "tcp://", "broker:1883"])
def test_bad_external_broker_urls_say_what_to_write(url):
    with pytest.raises(ValueError, match="tcp://127.0.0.1:1883"):
        ExternalBroker(url).address()


def test_modes_are_checked():
    twins = DeviceTwins("n")
    with pytest.raises(ValueError, match="internal, external, both"):
        EventBus(twins, mode="bridge")
    with pytest.raises(ValueError, match="needs an external broker"):
        EventBus(twins, mode="both")
    assert EventBus(twins, mode="external", external=ExternalBroker("tcp://b")).broker is None


def test_a_taken_port_is_one_line_naming_the_flags():
    import asyncio
    import socket

    from k3py.agent.devices.eventbus import BusError, EmbeddedBroker

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BusError) as e:
            asyncio.run(EmbeddedBroker("127.0.0.1", port).start())
    msg = str(e.value)
    assert "\n" not in msg and "--mqtt-port" in msg and str(port) in msg


def test_the_bus_subscribes_to_requests_only():
    """Every request the twin answers matches exactly one subscription (no duplicate
    deliveries); what the bus itself publishes matches none (it is not delivered back)."""
    from paho.mqtt.client import topic_matches_sub

    from k3py.agent.devices.eventbus import SUBSCRIPTIONS
    from k3py.mapper import topics as t

    def matches(topic: str) -> int:
        return sum(topic_matches_sub(sub, topic) for sub in SUBSCRIPTIONS)
    for ns in ("", "default"):
        for suffix in t.DEVICE_SUFFIXES:
            topic = t.device_topic(ns, "twin", suffix)  # a device named like a topic level
            assert matches(topic) == (suffix in t.REQUESTS), topic
            assert t.parse_topic(topic).suffix == suffix
    for suffix in (t.MEMBERSHIP_GET, t.MEMBERSHIP_GET_RESULT, t.MEMBERSHIP_UPDATED):
        assert matches(t.node_topic("edge-1", suffix)) == (suffix == t.MEMBERSHIP_GET)
    assert matches("$hw/events/upload/x") == 0 and matches("test") == 0
