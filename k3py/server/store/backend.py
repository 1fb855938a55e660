"""The Backend protocol every datastore driver implements, and its value types (kine-style).

Written by the drivers (sqlite.py today, postgres.py later); read by the registry layer
(k3py/server/registry.py), which owns object semantics. Every call reports the store revision."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "KeyValue", "Event", "WatchResult", "Backend",
    "StoreError", "StorageFullError", "StoreUnavailableError", "KeyExistsError",
    "CompactedError", "FutureRevisionError",
]


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    create_revision: int
    mod_revision: int  # = the row id = metadata.resourceVersion of this version
    value: bytes  # JSON object, stored without metadata.resourceVersion


@dataclass(frozen=True, slots=True)
class Event:
    create: bool
    delete: bool
    kv: KeyValue  # for a delete: the key's tombstone row (value = last value, new revision)
    prev_kv: KeyValue | None = None


class StoreError(Exception):
    pass


class StorageFullError(StoreError):
    """The file system under the datastore is full: nothing was written (-> 507). Writes work
    again, without a restart, once space is freed; reads are not affected."""

    def __init__(self, path: str) -> None:
        super().__init__(f"the datastore's disk is full: cannot write {path}; free space on "
                         f"its file system (writes resume by themselves)")
        self.path = path


class StoreUnavailableError(StoreError):
    """The datastore cannot be reached or did not answer in time (-> 503, or 504 if timeout).

    A shared datastore (postgres.py) raises it during an outage; the server keeps running."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class InvalidKeyError(StoreError):
    """A key the datastore cannot hold (a NUL, or too long for its index) (-> 400)."""


class KeyExistsError(StoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key exists: {key}")
        self.key = key


class CompactedError(StoreError):
    """The revision asked for is older than the compaction horizon (-> 410 Gone)."""

    def __init__(self, revision: int, compact_revision: int) -> None:
        super().__init__(f"required revision {revision} has been compacted "
                         f"(oldest available is {compact_revision})")
        self.revision = revision
        self.compact_revision = compact_revision


class FutureRevisionError(StoreError):
    def __init__(self, revision: int, current: int) -> None:
        super().__init__(f"revision {revision} is newer than the current revision {current}")
        self.revision = revision
        self.current = current


class WatchResult(Protocol):
    """A live watch. `events` yields batches in revision order and ends when cancelled/closed."""

    current_revision: int
    compact_revision: int

    def events(self) -> AsyncIterator[list[Event]]: ...

    def cancel(self) -> None: ...


class Backend(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def current_revision(self) -> int: ...

    async def compact_revision(self) -> int: ...

    async def get(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None]:
        """(current revision, newest live version of key at `revision` (0 = now) or None)."""
        ...

    async def list(self, prefix: str, start_key: str = "", limit: int = 0,
                   revision: int = 0) -> tuple[int, list[KeyValue]]:
        """(revision the list is consistent at, live keys with `prefix` and key >= start_key,
        ordered by key, at most `limit` (0 = all)). revision 0 = now; an older revision
        lists the state at that revision (CompactedError if compacted)."""
        ...

    async def count(self, prefix: str) -> tuple[int, int]: ...

    async def create(self, key: str, value: bytes) -> int:
        """New revision; KeyExistsError if key is live. Durable when it returns."""
        ...

    async def update(self, key: str, value: bytes,
                     revision: int) -> tuple[int, KeyValue | None, bool]:
        """Compare-and-swap on the key's mod_revision. Returns (current rev, kv, ok):
        ok=True: kv is the new version; ok=False: kv is the live version (None = no key)."""
        ...

    async def delete(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None, bool]:
        """Delete if the live mod_revision == revision (0 = unconditionally). Returns
        (current rev, deleted kv (ok) or live kv (not ok) or None, ok)."""
        ...

    async def watch(self, prefix: str, revision: int) -> WatchResult:
        """Events for keys under `prefix` with mod_revision > revision, then live ones.
        CompactedError if revision < compact revision (revision 0 = from now)."""
        ...

    async def compact(self, revision: int) -> int:
        """Remove history older than `revision` (keeps each key's live row). Returns the
        new compact revision."""
        ...
