"""The newest committed value of the keys written last, for a point read that need not ask
SQLite. Pure; used by sqlite.py on its event loop only.

A read-modify-write (a binding, a node's pod status report, a Lease renewal) reads the key it
is about to write, and the key was most often written a moment ago. On SQLite every commit
of the writer empties the reading connection's page cache, so that read walks the index and
the row's pages again: at 1,000 hollow nodes and ~290 pods/s, 740 such reads a second took
120 us of the loop each (55 us of the thread's CPU; the rest waiting, most likely for the GIL
back from the store's threads, which apsw lets go of around each SQLite call), about a tenth
of the loop. What a batch committed is known on the loop anyway (its events), so the loop
keeps it.

Only what is committed and current is kept: a key leaves the map when a write to it is
submitted, and comes back with the value its last committed write left once no other write
to it is in flight. A key not kept is read from SQLite as before. Sound while this process is
SQLite's only writer (a second server on SQLite is refused; PostgreSQL does not use it)."""

from __future__ import annotations

from collections import OrderedDict

from k3py.server.store.backend import Event, KeyValue

__all__ = ["RecentValues", "KEPT_KEYS", "KEPT_BYTES", "KEPT_VALUE_MAX"]

KEPT_KEYS = 8192  # ~10 s of a busy cluster's distinct keys (1,000 nodes, 300 pods/s); the
# server's RSS at 10,000 pods was 50-83 MB higher with them (bench/scale.py, docs/ha.md)
KEPT_BYTES = 64 << 20  # and at most this many bytes of values, whatever their sizes
KEPT_VALUE_MAX = 256 << 10  # a larger value (a Helm release Secret) is read from SQLite

_GONE = KeyValue("", 0, 0, b"")  # kept for a key whose last write deleted it


class RecentValues:
    """key -> newest committed KeyValue (or deleted) of the last `size` keys written, their
    values `budget` bytes at most; a value over `value_max` bytes is not kept."""

    def __init__(self, size: int = KEPT_KEYS, budget: int = KEPT_BYTES,
                 value_max: int = KEPT_VALUE_MAX) -> None:
        self.size = size
        self.budget = budget
        self.value_max = value_max
        self.bytes = 0  # of the values kept
        self._kept: OrderedDict[str, KeyValue] = OrderedDict()
        self._in_flight: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def lookup(self, key: str) -> tuple[bool, KeyValue | None]:
        """(known, value): whether the key is kept, and its value (None: deleted)."""
        kv = self._kept.get(key)
        if kv is None:
            return False, None
        return True, None if kv is _GONE else kv

    def submitted(self, key: str) -> None:
        """A write to `key` is on its way: until it is resolved, SQLite answers for it."""
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        self._drop(key)

    def _drop(self, key: str) -> None:
        kv = self._kept.pop(key, None)
        if kv is not None:
            self.bytes -= len(kv.value)

    def resolved(self, keys: list[str], events: list[Event]) -> None:
        """A batch came back: `keys` its writes (committed or not), `events` what it
        committed, in order. A key with no write left in flight keeps its last value."""
        for key in keys:
            n = self._in_flight.get(key, 0) - 1
            if n > 0:
                self._in_flight[key] = n
            else:
                self._in_flight.pop(key, None)
        for ev in events:
            key = ev.kv.key
            if key in self._in_flight:
                continue
            self._drop(key)
            kv = _GONE if ev.delete else ev.kv
            if len(kv.value) <= self.value_max:
                self._kept[key] = kv
                self.bytes += len(kv.value)
        while len(self._kept) > self.size or self.bytes > self.budget:
            _, kv = self._kept.popitem(last=False)
            self.bytes -= len(kv.value)

    def clear(self) -> None:
        self._kept.clear()
        self.bytes = 0
