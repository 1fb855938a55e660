"""Which Events the controllers write, decided as client-go's event correlator decides them
for kube-controller-manager and kube-scheduler:

- **Aggregation.** Events from one source about one object with the same type and reason
  but different messages (a ReplicaSet's "Created pod: web-abc12", "Created pod:
  web-def34", ...) are similar. From the 10th distinct message within 10 minutes on, they
  are recorded as one Event, "(combined from similar events): <the latest message>", whose
  count grows.
- **Spam filter.** A source may record a burst of 25 Events about one object, refilled at
  one every 5 minutes (a token bucket per source and object). What is over is dropped.

A Deployment of 100 replicas thus costs its ReplicaSet 25 Event writes instead of 100 (9
Events, then one combined Event counted 16 times). The exact repeats of one Event are still
counted by the recorder itself (EventRecorder in base.py). Both caches are LRUs of
REMEMBERED entries, as upstream's."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["AGGREGATE_MAX", "AGGREGATE_WINDOW", "COMBINED_PREFIX", "EventCorrelator",
           "REMEMBERED", "SPAM_BURST", "SPAM_REFILL", "lru_put"]

SPAM_BURST = 25
SPAM_REFILL = 300.0  # seconds for one more token
AGGREGATE_MAX = 10  # distinct messages within the window before they are combined
AGGREGATE_WINDOW = 600.0  # seconds since the last similar event
COMBINED_PREFIX = "(combined from similar events): "
REMEMBERED = 4096


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class _Similar:
    at: float
    messages: set[str] = field(default_factory=set)


def lru_put(cache: OrderedDict, key, value, bound: int = REMEMBERED) -> None:
    """`key` set to `value` as the most recent; the least recent beyond `bound` go (an
    OrderedDict's popitem(last=False) is O(1))."""
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > bound:
        cache.popitem(last=False)


class EventCorrelator:
    """`clock` gives seconds (monotonic); the tests drive their own."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: OrderedDict[tuple, _Bucket] = OrderedDict()
        self._similar: OrderedDict[tuple, _Similar] = OrderedDict()

    def aggregate(self, similar_key: tuple, message: str) -> tuple[str, bool]:
        """(the message to record, whether it is the combined Event) for an event of
        `similar_key` (source, object, type, reason)."""
        now = self.clock()
        rec = self._similar.get(similar_key)
        if rec is None or now - rec.at > AGGREGATE_WINDOW:
            rec = _Similar(now)
        rec.messages.add(message)
        rec.at = now
        lru_put(self._similar, similar_key, rec)
        if len(rec.messages) < AGGREGATE_MAX:
            return message, False
        rec.messages.pop()  # stays below the threshold: the next new message combines too
        return COMBINED_PREFIX + message, True

    def allow(self, spam_key: tuple) -> bool:
        """Whether the source may record one more event about the object of `spam_key`."""
        now = self.clock()
        b = self._buckets.get(spam_key)
        if b is None:
            b = _Bucket(float(SPAM_BURST), now)
        else:
            b.tokens = min(float(SPAM_BURST), b.tokens + (now - b.at) / SPAM_REFILL)
            b.at = now
        allowed = b.tokens >= 1.0
        if allowed:
            b.tokens -= 1.0
        lru_put(self._buckets, spam_key, b)
        return allowed
