"""The datastore: the Backend protocol (backend.py), the embedded SQLite driver (sqlite.py) and
the PostgreSQL one several servers share (postgres.py, imported only when configured).

Used by the registry (k3py/server/registry.py) and wired in k3py/server/main.py; see
docs/store-flow.md for how writes, reads, watches and compaction work."""

from k3py.server.store.backend import (
    Backend,
    CompactedError,
    Event,
    FutureRevisionError,
    InvalidKeyError,
    KeyExistsError,
    KeyValue,
    StorageFullError,
    StoreError,
    StoreUnavailableError,
    WatchResult,
)

__all__ = [
    "Backend", "KeyValue", "Event", "WatchResult",
    "StoreError", "StorageFullError", "StoreUnavailableError", "KeyExistsError",
    "InvalidKeyError",
    "CompactedError", "FutureRevisionError",
]
