"""In-process watch fan-out: each committed batch of events reaches every watcher whose prefix matches.

Fed by the store writer (sqlite.py publishes on the event loop after each commit); read by the
WatchStream objects that SQLiteBackend.watch returns, which merge a DB replay with the live feed."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator

from k3py.server.store.backend import Event

__all__ = ["Broadcaster", "Subscription", "WatchStream"]

DEFAULT_MAX_PENDING = 10_000  # events a watcher may lag behind before it is closed
_REPLAY_CHUNK = 1000


class Subscription:
    """One watcher's bounded queue of live event batches (already filtered by prefix)."""

    __slots__ = ("prefix", "closed", "overflowed", "_pending", "_count", "_max", "_waiter")

    def __init__(self, prefix: str, max_pending: int) -> None:
        self.prefix = prefix
        self.closed = False
        self.overflowed = False
        self._pending: deque[list[Event]] = deque()
        self._count = 0
        self._max = max_pending
        self._waiter: asyncio.Future[None] | None = None

    def push(self, events: list[Event]) -> bool:
        """Queue a batch; False (and the subscription closes) when the watcher lags too far."""
        if self.closed:
            return False
        if self._count + len(events) > self._max:
            self.overflowed = True
            self.close()
            return False
        self._pending.append(events)
        self._count += len(events)
        self._wake()
        return True

    async def get(self) -> list[Event] | None:
        """The next batch, or None once closed."""
        while not self._pending:
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        batch = self._pending.popleft()
        self._count -= len(batch)
        return batch

    def close(self) -> None:
        # Pending events are dropped: a closed watch ends and its client re-lists or re-watches.
        self.closed = True
        self._pending.clear()
        self._count = 0
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)


class Broadcaster:
    """Watchers grouped by prefix, so each prefix filters a batch once however many watch it."""

    def __init__(self, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self._max_pending = max_pending
        self._by_prefix: dict[str, set[Subscription]] = {}
        self._closed = False

    @property
    def watcher_count(self) -> int:
        return sum(len(s) for s in self._by_prefix.values())

    def subscribe(self, prefix: str) -> Subscription:
        sub = Subscription(prefix, self._max_pending)
        if self._closed:
            sub.close()
        else:
            self._by_prefix.setdefault(prefix, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._by_prefix.get(sub.prefix)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_prefix[sub.prefix]
        sub.close()

    def publish(self, events: list[Event]) -> None:
        """Called on the event loop, in commit order; never blocks and never awaits."""
        if not events or self._closed:
            return
        dropped: list[Subscription] = []
        for prefix, subs in self._by_prefix.items():
            matched = events if not prefix else [e for e in events if e.kv.key.startswith(prefix)]
            if not matched:
                continue
            for sub in subs:
                if not sub.push(matched):
                    dropped.append(sub)
        for sub in dropped:
            self.unsubscribe(sub)

    def end_all(self) -> None:
        """End every current watch (their clients re-watch, or re-list if compacted); new
        subscriptions are still taken. For a feed that has lost events it cannot replay."""
        for subs in list(self._by_prefix.values()):
            for sub in list(subs):
                self.unsubscribe(sub)

    def close(self) -> None:
        self._closed = True
        self.end_all()


class WatchStream:
    """A WatchResult: the replayed history first, then live batches with revision > the replay's.

    The subscription is taken before the replay is read, so an event committed in between is in
    both; dropping live events at or below `after` removes exactly those duplicates."""

    def __init__(self, broadcaster: Broadcaster, sub: Subscription, replay: list[Event],
                 after: int, current_revision: int, compact_revision: int) -> None:
        self.current_revision = current_revision
        self.compact_revision = compact_revision
        self._broadcaster = broadcaster
        self._sub = sub
        self._replay = replay
        self._after = after

    @property
    def overflowed(self) -> bool:
        """True when the watch ended because its consumer fell too far behind."""
        return self._sub.overflowed

    async def events(self) -> AsyncIterator[list[Event]]:
        try:
            replay, self._replay = self._replay, []
            for i in range(0, len(replay), _REPLAY_CHUNK):
                if self._sub.closed:
                    return
                yield replay[i:i + _REPLAY_CHUNK]
            while True:
                batch = await self._sub.get()
                if batch is None:
                    return
                after = self._after
                if batch[0].kv.mod_revision <= after:
                    batch = [e for e in batch if e.kv.mod_revision > after]
                    if not batch:
                        continue
                self._after = batch[-1].kv.mod_revision
                yield batch
        finally:
            self.cancel()

    def cancel(self) -> None:
        self._broadcaster.unsubscribe(self._sub)
