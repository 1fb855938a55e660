"""Counting the node's MQTT traffic as the event bus sees it (the requests it takes in, the
answers, documents and deltas it publishes, its error answers): messages per second by topic
over a sliding window and totals, with bounded memory; and the pieces of the live tail (a
topic filter, a rate limit). No I/O: mqttreport.py sends the summaries and serves the tail.

Fed by EventBus.taps (direction, topic, payload); read by mqttreport.MqttReporter."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from k3py.tunnel.mqtt import MAX_CLIENTS, MAX_TOPICS, ClientInfo, MqttSummary, TopicRate

__all__ = ["TrafficCounter", "RateLimit", "OTHER_TOPICS", "MAX_TRACKED", "WINDOW"]

WINDOW = 10  # seconds the rates are over (whole seconds: one bucket each)
MAX_TRACKED = 200  # topics counted one by one; more share OTHER_TOPICS
OTHER_TOPICS = "(other topics)"


@dataclass
class _Topic:
    total: int = 0
    buckets: deque[list[int]] = field(default_factory=deque)  # [second, count], oldest first

    def add(self, second: int) -> None:
        self.total += 1
        if self.buckets and self.buckets[-1][0] == second:
            self.buckets[-1][1] += 1
        else:
            self.buckets.append([second, 1])
            if len(self.buckets) > WINDOW:
                self.buckets.popleft()

    def in_window(self, now: int) -> int:
        return sum(n for s, n in self.buckets if s > now - WINDOW)


class TrafficCounter:
    """Messages by topic and in total, as `tap` is told of them. At most MAX_TRACKED topics
    are counted one by one (one that saw nothing for a whole window makes room); the rest are
    counted together under OTHER_TOPICS."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.received = 0
        self.published = 0
        self.errors = 0
        self._topics: dict[str, _Topic] = {}

    def tap(self, direction: str, topic: str, _payload: bytes = b"") -> None:
        """EventBus.taps' signature: "in", "out" or "error" (an error answer, published)."""
        if direction == "in":
            self.received += 1
        else:
            self.published += 1
            self.errors += direction == "error"
        now = int(self.clock())
        counter = self._topics.get(topic)
        if counter is None:
            if len(self._topics) >= MAX_TRACKED:
                self._forget_idle(now)
            key = topic if len(self._topics) < MAX_TRACKED else OTHER_TOPICS
            counter = self._topics.setdefault(key, _Topic())
        counter.add(now)

    def _forget_idle(self, now: int) -> None:
        for topic in [t for t, c in self._topics.items() if c.in_window(now) == 0]:
            del self._topics[topic]

    def tracked(self) -> int:
        return len(self._topics)

    def summary(self, clients: list[ClientInfo] | None) -> MqttSummary:
        """Now: the busiest MAX_TOPICS topics (by messages in the window, then in total)."""
        now = self.clock()
        second = int(now)
        counts = [(c.in_window(second), c.total, t) for t, c in self._topics.items()]
        counts.sort(key=lambda x: (-x[0], -x[1], x[2]))
        topics = tuple(TopicRate(t, n / WINDOW, total) for n, total, t in counts[:MAX_TOPICS])
        listed = None if clients is None else tuple(clients[:MAX_CLIENTS])
        return MqttSummary(now, float(WINDOW), sum(n for n, _, _ in counts) / WINDOW,
                           self.received, self.published, self.errors, topics, listed,
                           len(clients or ()))


class RateLimit:
    """A token bucket: `rate` a second, bursts of up to `rate`."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self._tokens = float(rate)
        self._last = clock()

    def allow(self) -> bool:
        now = self.clock()
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
