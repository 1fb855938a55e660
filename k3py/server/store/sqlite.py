"""The embedded datastore: a kine-style revision log in one SQLite table, driven through apsw.

Implements backend.Backend for the registry (k3py/server/registry.py): writes go through one
group-commit writer thread, reads through a small reader-thread pool, live events through
broadcaster.py; logstructured.py holds the revision rules and the periodic upkeep."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import apsw

from k3py.server.store.backend import (
    CompactedError,
    Event,
    KeyExistsError,
    KeyValue,
    StorageFullError,
    StoreError,
)
from k3py.server.store.broadcaster import Broadcaster, WatchStream
from k3py.server.store.logstructured import Maintenance, check_read_revision, prefix_end
from k3py.server.store.recent import RecentValues

__all__ = ["SQLiteBackend", "SCHEMA"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# The whole schema. One row per key version; id is the revision; the newest row per name is
# the key's state, deleted=1 marks a tombstone. AUTOINCREMENT: ids are never reused, even
# after compaction deletes the newest rows.
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS kine (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        created INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        create_revision INTEGER NOT NULL,
        prev_revision INTEGER NOT NULL,
        value BLOB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS kine_name_id ON kine (name, id)",
    "CREATE TABLE IF NOT EXISTS kine_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO kine_meta (key, value) VALUES ('compact_revision', 0)",
]

_PRAGMAS = [
    # Only takes effect on a new file: lets checkpoint() hand pages freed by compaction back to
    # the file system, so a burst of objects does not leave state.db large for ever.
    "PRAGMA auto_vacuum=INCREMENTAL",
    "PRAGMA journal_mode=WAL",
    # FULL: the WAL is fsynced at every commit, so an acknowledged write survives power loss,
    # not only a process kill; group commit keeps that to one fsync per batch.
    "PRAGMA synchronous=FULL",
    "PRAGMA journal_size_limit=67108864",
]

_SEQ = "SELECT seq FROM sqlite_sequence WHERE name = 'kine'"
_COMPACT = "SELECT value FROM kine_meta WHERE key = 'compact_revision'"
_LATEST = ("SELECT id, deleted, create_revision, value FROM kine WHERE name = ? "
           "ORDER BY id DESC LIMIT 1")
# A get of now: the current revision and the key's newest row in one statement, which is its
# own read snapshot, so a point read is one step (and one GIL hand-off) in the reader thread,
# not five (BEGIN, revision, compact revision, row, COMMIT); no row: get() takes the snapshot
_GET_NOW = ("SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'kine'), id, deleted, "
            "create_revision, value FROM kine WHERE name = ? ORDER BY id DESC LIMIT 1")
_LATEST_AT = ("SELECT id, deleted, create_revision, value FROM kine WHERE name = ? AND id <= ? "
              "ORDER BY id DESC LIMIT 1")
_INSERT = ("INSERT INTO kine (id, name, created, deleted, create_revision, prev_revision, value) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)")
# Newest row per key at a revision, in key order: scanning the (name, id) index lets LIMIT stop
# early, so a page of a large collection does not read the whole collection.
_LIST = ("SELECT k.id, k.name, k.create_revision, k.value FROM kine AS k "
         "WHERE {range} AND k.deleted = 0 AND k.id = "
         "(SELECT MAX(id) FROM kine WHERE name = k.name AND id <= ?) "
         "ORDER BY k.name LIMIT ?")
_COUNT = ("SELECT COUNT(*) FROM kine AS k WHERE {range} AND k.deleted = 0 AND k.id = "
          "(SELECT MAX(id) FROM kine WHERE name = k.name)")
_REPLAY = ("SELECT k.id, k.name, k.created, k.deleted, k.create_revision, k.value, "
           "p.id, p.create_revision, p.value FROM kine AS k "
           "LEFT JOIN kine AS p ON p.id = k.prev_revision "
           "WHERE k.id > ? AND {range} ORDER BY k.id")
# A recent replay walks the id range (cheap whatever the prefix holds); one from far back walks
# the prefix's (name, id) range instead. "+k.name" keeps SQLite off the name index.
_REPLAY_BY_ID_MAX = 50_000
_COMPACT_SUPERSEDED = ("DELETE FROM kine WHERE id IN (SELECT prev_revision FROM kine "
                       "WHERE id > ? AND id <= ? AND prev_revision != 0)")
_COMPACT_TOMBSTONES = "DELETE FROM kine WHERE deleted = 1 AND id > ? AND id <= ?"
_SET_COMPACT = "UPDATE kine_meta SET value = ? WHERE key = 'compact_revision'"

_VACUUM_MIN_FREE = 1024  # free pages (4 MiB) before checkpoint() shrinks the file
_VACUUM_MAX_PAGES = 4096  # pages moved per checkpoint: bounds the WAL that vacuuming writes
_MAX_BATCH = 1000  # write ops per transaction
_COMPACT_CHUNK = 5000  # revisions per compaction transaction, so writes wait little
_READERS = 4
_LOOP_BUSY_MS = 20  # milliseconds a point read on the event loop waits for a lock
_WRITE_OPS = frozenset({"create", "update", "delete"})


def _range(prefix: str, start_key: str) -> tuple[str, list[str]]:
    lo = max(prefix, start_key)
    hi = prefix_end(prefix)
    if hi is None:
        return "k.name >= ?", [lo]
    return "k.name >= ? AND k.name < ?", [lo, hi]


class _Op:
    __slots__ = ("kind", "key", "value", "revision", "future")

    def __init__(self, kind: str, key: str, value: bytes, revision: int,
                 future: asyncio.Future[Any] | None) -> None:
        self.kind = kind
        self.key = key
        self.value = value
        self.revision = revision
        self.future = future


_STOP = _Op("stop", "", b"", 0, None)


class SQLiteBackend:
    """Backend on one SQLite file (WAL). Call `await start()` before use, `await close()` after.

    Extra to the Backend protocol: `checkpoint()` (WAL checkpoint, TRUNCATE) and `watcher_count`.
    `path` must be a file path: the writer and the readers are separate connections."""

    def __init__(self, path: str, *, compact_interval: float = 300.0,
                 compact_min_retain: int = 1000, checkpoint_interval: float = 60.0) -> None:
        self.path = path
        self._compact_interval = compact_interval
        self._compact_min_retain = compact_min_retain
        self._checkpoint_interval = checkpoint_interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rev = 0  # newest revision published on the loop
        self._compact_rev = 0
        self._w_rev = 0  # writer thread only: newest revision written
        self._full = False  # writer thread only: the last write failed on a full disk
        self._wq: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._wconn: apsw.Connection | None = None
        self._readers: concurrent.futures.ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._rconns: list[apsw.Connection] = []
        self._rconns_lock = threading.Lock()
        self._loop_conn: apsw.Connection | None = None  # point reads on the loop (_on_loop)
        self._recent = RecentValues()  # loop only: what the last batches committed (recent.py)
        self._broadcaster = Broadcaster()
        self._compact_lock = asyncio.Lock()
        self._maintenance: Maintenance | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wconn = await asyncio.to_thread(self._open_writer)
        self._readers = concurrent.futures.ThreadPoolExecutor(
            _READERS, thread_name_prefix="store-read")
        self._writer = threading.Thread(target=self._run_writer, name="store-write", daemon=True)
        self._writer.start()
        self._maintenance = Maintenance(
            current_revision=lambda: self._rev, compact_revision=lambda: self._compact_rev,
            compact=self.compact, checkpoint=self.checkpoint,
            compact_interval=self._compact_interval,
            compact_min_retain=self._compact_min_retain,
            checkpoint_interval=self._checkpoint_interval)
        self._maintenance.start()

    async def close(self) -> None:
        if self._closed or self._loop is None:
            self._closed = True
            return
        self._closed = True
        if self._maintenance is not None:
            await self._maintenance.stop()
        self._broadcaster.close()
        self._wq.put(_STOP)
        if self._writer is not None:
            await asyncio.to_thread(self._writer.join)
        if self._readers is not None:
            await asyncio.to_thread(self._readers.shutdown, True)
        with self._rconns_lock:
            conns, self._rconns = self._rconns, []
        for c in conns:
            c.close()

    def _open_writer(self) -> apsw.Connection:
        conn = apsw.Connection(self.path)
        conn.setbusytimeout(5000)
        for p in _PRAGMAS:
            conn.execute(p)
        with conn:
            for stmt in SCHEMA:
                conn.execute(stmt)
            # Revision 0 means "now" in the API, so a fresh store starts at revision 1.
            if conn.execute(_SEQ).fetchone() is None:
                conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('kine', 1)")
        self._w_rev = self._rev = conn.execute(_SEQ).fetchone()[0]
        self._compact_rev = conn.execute(_COMPACT).fetchone()[0]
        return conn

    @property
    def watcher_count(self) -> int:
        return self._broadcaster.watcher_count

    # ------------------------------------------------------------------ reads

    def _open_reader(self, busy_ms: int) -> apsw.Connection:
        """A read-only connection, closed with the store."""
        conn = apsw.Connection(self.path, flags=apsw.SQLITE_OPEN_READWRITE)
        conn.setbusytimeout(busy_ms)
        conn.execute("PRAGMA query_only=1")
        with self._rconns_lock:
            self._rconns.append(conn)
        return conn

    def _reader(self) -> apsw.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open_reader(5000)
        return conn

    async def _in_reader(self, fn: Callable[[apsw.Connection], T]) -> T:
        """Run fn(conn) in a reader thread."""
        if self._closed or self._readers is None:
            raise StoreError("store is closed")
        return await asyncio.get_running_loop().run_in_executor(
            self._readers, lambda: fn(self._reader()))

    async def _read(self, fn: Callable[[apsw.Connection, int, int], T]) -> T:
        """Run fn(conn, current, compact) in a reader thread, inside one read snapshot."""
        return await self._in_reader(lambda conn: _in_snapshot(conn, fn))

    async def current_revision(self) -> int:
        return self._rev

    async def compact_revision(self) -> int:
        return self._compact_rev

    async def get(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None]:
        def q(conn: apsw.Connection, current: int, compact: int) -> tuple[int, KeyValue | None]:
            check_read_revision(revision, current, compact)
            if revision > 0:
                row = conn.execute(_LATEST_AT, (key, revision)).fetchone()
            else:
                row = conn.execute(_LATEST, (key,)).fetchone()
            if row is None or row[1]:
                return current, None
            return current, KeyValue(key, row[2], row[0], row[3])

        def now(conn: apsw.Connection) -> tuple[int, KeyValue | None]:
            row = conn.execute(_GET_NOW, (key,)).fetchone()
            if row is None:
                return _in_snapshot(conn, q)
            current, rid, deleted, crev, value = row
            return current, None if deleted else KeyValue(key, crev, rid, value)

        if revision > 0:
            return await self._read(q)
        known, kv = self._recent.lookup(key) if not self._closed else (False, None)
        if known:  # (a closed store answers nothing, as below)
            return self._rev, kv
        conn = self._on_loop()
        if conn is not None:
            try:
                return now(conn)
            except apsw.BusyError:
                pass  # the database is locked past a moment (a recovery): read in a thread
        return await self._in_reader(now)

    def _on_loop(self) -> apsw.Connection | None:
        """The loop thread's own reader connection, for the point read of a key now: one
        indexed row from SQLite's page cache takes tens of microseconds, where a reader
        thread costs the request two more turns of a busy event loop (the result handed
        back, then the handler woken), each as long as everything else ready in it. It
        waits at most _LOOP_BUSY_MS for a lock (a reader in WAL mode almost never does),
        then the read goes to a thread. None when the store is closed."""
        if self._closed:
            return None
        if self._loop_conn is None:
            self._loop_conn = self._open_reader(_LOOP_BUSY_MS)
        return self._loop_conn

    async def list(self, prefix: str, start_key: str = "", limit: int = 0,
                   revision: int = 0) -> tuple[int, list[KeyValue]]:
        cond, args = _range(prefix, start_key)
        sql = _LIST.format(range=cond)

        def q(conn: apsw.Connection, current: int, compact: int) -> tuple[int, list[KeyValue]]:
            check_read_revision(revision, current, compact)
            at = revision if revision > 0 else current
            rows = conn.execute(sql, (*args, at, limit if limit > 0 else -1))
            return at, [KeyValue(name, crev, rid, value) for rid, name, crev, value in rows]

        return await self._read(q)

    async def count(self, prefix: str) -> tuple[int, int]:
        cond, args = _range(prefix, "")
        sql = _COUNT.format(range=cond)

        def q(conn: apsw.Connection, current: int, compact: int) -> tuple[int, int]:
            return current, conn.execute(sql, args).fetchone()[0]

        return await self._read(q)

    # ------------------------------------------------------------------ watch

    async def watch(self, prefix: str, revision: int) -> WatchStream:
        # Subscribe before reading the replay: nothing committed after the replay's snapshot can
        # then be missed, and what is in both is dropped by revision in WatchStream.
        sub = self._broadcaster.subscribe(prefix)
        if revision <= 0:
            return WatchStream(self._broadcaster, sub, [], 0, self._rev, self._compact_rev)
        cond, args = _range(prefix, "")
        if self._rev - revision <= _REPLAY_BY_ID_MAX:
            cond = cond.replace("k.name", "+k.name")
        sql = _REPLAY.format(range=cond)

        def q(conn: apsw.Connection, current: int, compact: int) -> tuple[list[Event], int, int]:
            if revision < compact:
                raise CompactedError(revision, compact)
            events = [_event(*row) for row in conn.execute(sql, (revision, *args))]
            return events, current, compact

        try:
            replay, current, compact = await self._read(q)
        except BaseException:
            self._broadcaster.unsubscribe(sub)
            raise
        return WatchStream(self._broadcaster, sub, replay, max(current, revision),
                           current, compact)

    # ------------------------------------------------------------------ writes

    async def _submit(self, kind: str, key: str = "", value: bytes = b"",
                      revision: int = 0) -> Any:
        if self._closed or self._loop is None:
            raise StoreError("store is closed")
        fut = self._loop.create_future()
        if kind in _WRITE_OPS:
            self._recent.submitted(key)
        self._wq.put(_Op(kind, key, value, revision, fut))
        return await fut

    async def create(self, key: str, value: bytes) -> int:
        return await self._submit("create", key, value)

    async def update(self, key: str, value: bytes,
                     revision: int) -> tuple[int, KeyValue | None, bool]:
        return await self._submit("update", key, value, revision)

    async def delete(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None, bool]:
        return await self._submit("delete", key, b"", revision)

    async def compact(self, revision: int) -> int:
        """Remove history up to `revision` (clamped to the current revision), in chunks."""
        async with self._compact_lock:
            target = min(revision, self._rev)
            while self._compact_rev < target:
                hi = min(self._compact_rev + _COMPACT_CHUNK, target)
                await self._submit("compact", revision=hi)
                self._compact_rev = hi
            return self._compact_rev

    async def checkpoint(self) -> tuple[int, int, int]:
        """Return free pages to the file system (incremental vacuum) when there are many, then
        PRAGMA wal_checkpoint(TRUNCATE) on the writer: (busy, wal pages, checkpointed)."""
        return await self._submit("checkpoint")

    # ------------------------------------------------------------------ writer thread

    def _run_writer(self) -> None:
        conn = self._wconn
        assert conn is not None
        stopping = False
        while not stopping:
            batch = [self._wq.get()]
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._wq.get_nowait())
                except queue.Empty:
                    break
            writes = [op for op in batch if op.kind in _WRITE_OPS]
            if writes:
                self._commit_writes(conn, writes)
            for op in batch:
                if op is _STOP:
                    stopping = True
                elif op.kind not in _WRITE_OPS:
                    self._run_maintenance(conn, op)
        leftovers: list[tuple[_Op, Any]] = []
        while True:
            try:
                op = self._wq.get_nowait()
            except queue.Empty:
                break
            if op.future is not None:
                leftovers.append((op, StoreError("store is closed")))
        if leftovers:
            self._deliver(leftovers, [])
        conn.close()

    def _commit_writes(self, conn: apsw.Connection, ops: list[_Op]) -> None:
        start_rev = self._w_rev
        results: list[tuple[_Op, Any]] = []
        events: list[Event] = []
        try:
            with _transaction(conn):
                for op in ops:
                    results.append((op, self._apply(conn, op, events)))
        except Exception as e:  # nothing of this batch is durable: every caller gets the error
            self._w_rev = start_rev
            err = self._write_error(e, "write batch")
            if not isinstance(err, StorageFullError):
                log.error("store write batch failed", exc_info=e)
            self._deliver([(op, err) for op in ops], [])
            return
        if self._full:
            self._full = False
            log.warning("store writes work again: %s has free space", self.path)
        self._deliver(results, events)

    def _write_error(self, e: Exception, what: str) -> StoreError:
        """The error callers get for a failed transaction. A full disk is logged here, once
        when it starts, not at every refused write."""
        if isinstance(e, apsw.FullError):
            if not self._full:
                self._full = True
                log.error("store %s failed: the disk under %s is full; writes are refused "
                          "(507) until space is freed, reads go on", what, self.path)
            return StorageFullError(self.path)
        return e if isinstance(e, StoreError) else StoreError(f"store {what} failed: {e}")

    def _apply(self, conn: apsw.Connection, op: _Op, events: list[Event]) -> Any:
        """One op inside the batch transaction; a failed check affects only this op."""
        key = op.key
        row = conn.execute(_LATEST, (key,)).fetchone()
        live = None if row is None or row[1] else KeyValue(key, row[2], row[0], row[3])
        prev_id = row[0] if row is not None else 0
        if op.kind == "create":
            if live is not None:
                return KeyExistsError(key)
            rev = self._w_rev + 1
            conn.execute(_INSERT, (rev, key, 1, 0, rev, prev_id, op.value))
            self._w_rev = rev
            events.append(Event(create=True, delete=False, kv=KeyValue(key, rev, rev, op.value)))
            return rev
        if live is None:
            return self._w_rev, None, False
        if op.kind == "update":
            if live.mod_revision != op.revision:
                return self._w_rev, live, False
            rev = self._w_rev + 1
            conn.execute(_INSERT, (rev, key, 0, 0, live.create_revision, live.mod_revision,
                                   op.value))
            self._w_rev = rev
            kv = KeyValue(key, live.create_revision, rev, op.value)
            events.append(Event(create=False, delete=False, kv=kv, prev_kv=live))
            return rev, kv, True
        # delete: the tombstone carries the last value, so a DELETED event can show the object
        if op.revision and live.mod_revision != op.revision:
            return self._w_rev, live, False
        rev = self._w_rev + 1
        conn.execute(_INSERT, (rev, key, 0, 1, live.create_revision, live.mod_revision,
                               live.value))
        self._w_rev = rev
        tomb = KeyValue(key, live.create_revision, rev, live.value)
        events.append(Event(create=False, delete=True, kv=tomb, prev_kv=live))
        return rev, live, True

    def _run_maintenance(self, conn: apsw.Connection, op: _Op) -> None:
        try:
            if op.kind == "compact":
                with _transaction(conn):  # one transaction per chunk
                    lo = conn.execute(_COMPACT).fetchone()[0]
                    hi = op.revision
                    if hi > lo:
                        conn.execute(_COMPACT_SUPERSEDED, (lo, hi))
                        conn.execute(_COMPACT_TOMBSTONES, (lo, hi))
                        conn.execute(_SET_COMPACT, (hi,))
                result: Any = hi
            elif op.kind == "checkpoint":
                if conn.execute("PRAGMA freelist_count").fetchone()[0] >= _VACUUM_MIN_FREE:
                    conn.execute(f"PRAGMA incremental_vacuum({_VACUUM_MAX_PAGES})").fetchall()
                # A short busy wait: readers holding old snapshots must not stall writes long.
                conn.setbusytimeout(200)
                try:
                    result = tuple(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
                finally:
                    conn.setbusytimeout(5000)
            else:
                result = StoreError(f"unknown store op {op.kind}")
        except Exception as e:
            result = self._write_error(e, op.kind)
        self._deliver([(op, result)], [])

    def _deliver(self, results: list[tuple[_Op, Any]], events: list[Event]) -> None:
        """Hand a committed batch to the loop: one callback publishes events, resolves futures."""
        loop = self._loop
        assert loop is not None
        rev = self._w_rev
        try:
            loop.call_soon_threadsafe(self._resolve, results, events, rev)
        except RuntimeError:  # loop closed: nobody is waiting any more
            pass

    def _resolve(self, results: list[tuple[_Op, Any]], events: list[Event], rev: int) -> None:
        if rev > self._rev:
            self._rev = rev
        self._broadcaster.publish(events)
        self._recent.resolved([op.key for op, _ in results if op.kind in _WRITE_OPS], events)
        for op, res in results:
            fut = op.future
            if fut is None or fut.done():
                continue
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)


@contextlib.contextmanager
def _transaction(conn: apsw.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error unless SQLite already did it (it
    does after a full disk or an I/O error, and a second ROLLBACK would hide the cause)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _in_snapshot(conn: apsw.Connection, fn: Callable[[apsw.Connection, int, int], T]) -> T:
    """fn(conn, current, compact) inside one read transaction of a reader connection."""
    conn.execute("BEGIN")
    try:
        row = conn.execute(_SEQ).fetchone()  # the snapshot starts here
        current = row[0] if row else 0
        compact = conn.execute(_COMPACT).fetchone()[0]
        return fn(conn, current, compact)
    finally:
        conn.execute("COMMIT")


def _event(rid: int, name: str, created: int, deleted: int, crev: int, value: bytes,
           pid: int | None, pcrev: int | None, pvalue: bytes | None) -> Event:
    kv = KeyValue(name, crev, rid, value)
    prev = None
    if pid is not None and not created:
        prev = KeyValue(name, pcrev or 0, pid, pvalue or b"")
    return Event(create=bool(created), delete=bool(deleted), kv=kv, prev_kv=prev)
