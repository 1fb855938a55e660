"""The shared datastore: the kine-style revision log in one PostgreSQL table, driven through asyncpg.

Implements backend.Backend for the registry when `--datastore-endpoint postgres://...` is given;
several servers share one database. Writes are conditional inserts whose events their server
publishes itself; one poller per server turns the other servers' rows into events (LISTEN/NOTIFY
wakes it; gaps are waited for, then filled); both hand them to broadcaster.py in revision order.
logstructured.py holds the revision rules and the periodic compaction."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from k3py.aio import cancel_and_wait, wait_event
from k3py.config import redact_endpoint
from k3py.server.store.backend import (
    CompactedError,
    Event,
    InvalidKeyError,
    KeyExistsError,
    KeyValue,
    StoreError,
    StoreUnavailableError,
)
from k3py.server.store.broadcaster import Broadcaster, WatchStream
from k3py.server.store.logstructured import Maintenance, check_read_revision, prefix_end

__all__ = ["PostgresBackend", "SCHEMA"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_CHANNEL = "kine"
# Taken while the schema is created, so servers starting together do not race on it.
_SCHEMA_LOCK = 0x6B337079

# The whole schema. One row per key version; id is the revision, taken from kine_id_seq; the
# newest row per name is the key's state, deleted=1 marks a tombstone. The unique
# (name, prev_revision) index is what makes a write conditional across servers: two writers
# that read the same live row both insert its successor, and only one insert can succeed.
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS kine (
        id BIGINT PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL,
        created SMALLINT NOT NULL,
        deleted SMALLINT NOT NULL,
        create_revision BIGINT NOT NULL,
        prev_revision BIGINT NOT NULL,
        value BYTEA NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS kine_name_id ON kine (name, id)",
    "CREATE UNIQUE INDEX IF NOT EXISTS kine_name_prev_revision ON kine (name, prev_revision)",
    # Revision 0 means "now" in the API, so the first row is revision 2 (the empty store is 1).
    "CREATE SEQUENCE IF NOT EXISTS kine_id_seq START WITH 2",
    "CREATE TABLE IF NOT EXISTS kine_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    "INSERT INTO kine_meta (key, value) VALUES ('compact_revision', 0) ON CONFLICT DO NOTHING",
    # One round trip per write: read the key's newest row, check the write's condition
    # (op 1 create: no live row; 2 update: the live row is p_revision; 3 delete: likewise, or
    # any if 0), insert its successor. rev > 0: written (cur_* is the row it replaced, value
    # only for an update or a delete); 0: the condition failed (cur_* is the newest row); < 0:
    # another writer took the key's successor slot, or a poller filled this id as a gap, so a
    # gap row holds -rev instead (the log stays dense, no poller waits for an id that will
    # never commit): try again. The NOTIFY is sent apart (_NOTIFY).
    """CREATE OR REPLACE FUNCTION kine_write(p_op SMALLINT, p_name TEXT, p_revision BIGINT,
            p_value BYTEA, OUT rev BIGINT, OUT cur_id BIGINT,
            OUT cur_deleted SMALLINT, OUT cur_create_revision BIGINT, OUT cur_value BYTEA)
            LANGUAGE plpgsql AS $$
    BEGIN
        SELECT id, deleted, create_revision, value
            INTO cur_id, cur_deleted, cur_create_revision, cur_value
            FROM kine WHERE name = p_name ORDER BY id DESC LIMIT 1;
        rev := 0;
        IF p_op = 1 THEN
            cur_value := NULL;
            IF cur_deleted = 0 THEN
                RETURN;
            END IF;
        ELSIF cur_id IS NULL OR cur_deleted = 1
                OR ((p_op = 2 OR p_revision <> 0) AND cur_id <> p_revision) THEN
            RETURN;
        END IF;
        rev := nextval('kine_id_seq');
        -- ON CONFLICT, not an EXCEPTION block: that would open a subtransaction per write,
        -- and more than 64 in one transaction (a batch) overflow PostgreSQL's subxid cache
        INSERT INTO kine VALUES (rev, p_name, (p_op = 1)::int, (p_op = 3)::int,
            CASE WHEN p_op = 1 THEN rev ELSE cur_create_revision END,
            COALESCE(cur_id, 0), CASE WHEN p_op = 3 THEN cur_value ELSE p_value END)
            ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            INSERT INTO kine VALUES (rev, 'gap-' || rev, 0, 1, 0, 0, '')
                ON CONFLICT DO NOTHING;
            rev := -rev;
        END IF;
    END $$""",
    # Several writes in one round trip and one transaction (one commit, one WAL flush): a
    # server's concurrent writes go together, as SQLite's group commit. In array order.
    """CREATE OR REPLACE FUNCTION kine_write_batch(p_ops SMALLINT[], p_names TEXT[],
            p_revisions BIGINT[], p_values BYTEA[]) RETURNS TABLE (rev BIGINT, cur_id BIGINT,
            cur_deleted SMALLINT, cur_create_revision BIGINT, cur_value BYTEA)
            LANGUAGE plpgsql AS $$
    BEGIN
        FOR i IN 1 .. coalesce(array_length(p_ops, 1), 0) LOOP
            RETURN QUERY SELECT * FROM kine_write(p_ops[i], p_names[i], p_revisions[i],
                                                  p_values[i]);
        END LOOP;
    END $$""",
]

# Gap rows have create_revision 0; every real row has its creation's id there.
_REAL = "k.create_revision > 0"
_LATEST = ("SELECT id, deleted, create_revision, value FROM kine WHERE name = $1 "
           "ORDER BY id DESC LIMIT 1")
_LATEST_AT = ("SELECT id, deleted, create_revision, value FROM kine WHERE name = $1 "
              "AND id <= $2 ORDER BY id DESC LIMIT 1")
_WRITE_BATCH = "SELECT * FROM kine_write_batch($1, $2, $3, $4)"
# Wakes the other servers' pollers; the payload is the sending server's token. Not in the
# write's transaction: PostgreSQL holds one database-wide lock from a notifying transaction's
# commit until its WAL is flushed, which would make every write wait for the one before it. A
# NOTIFY needs no durability, so it commits without waiting for the flush.
_NOTIFY = ("BEGIN; SET LOCAL synchronous_commit = off; SELECT pg_notify('" + _CHANNEL +
           "', '{}'); COMMIT")
_CREATE, _UPDATE, _DELETE = 1, 2, 3
# Gap rows for the ids $1..$2: a rolled-back batch leaves a run of them, filled at once.
_FILL = ("INSERT INTO kine SELECT n, 'gap-' || n, 0, 1, 0, 0, '' "
         "FROM generate_series($1::bigint, $2::bigint) AS n ON CONFLICT DO NOTHING")
# Every read is one statement, so its rows and the compact revision come from one snapshot:
# the compact revision is the first column of each row (one row of NULLs if nothing matched).
_WITH_COMPACT = ("SELECT m.value AS compact, q.* FROM kine_meta AS m LEFT JOIN LATERAL ({}) "
                 "AS q ON true WHERE m.key = 'compact_revision'")
_LIST = ("SELECT k.id, k.name, k.create_revision, k.value FROM kine AS k "
         "WHERE {range} AND k.deleted = 0 AND k.id = "
         "(SELECT MAX(id) FROM kine WHERE name = k.name AND id <= $1) "
         "ORDER BY k.name LIMIT $2")
_COUNT = ("SELECT COUNT(*) FROM kine AS k WHERE {range} AND k.deleted = 0 AND k.id = "
          "(SELECT MAX(id) FROM kine WHERE name = k.name AND id <= $1)")
_EVENTS = ("SELECT k.id, k.name, k.created, k.deleted, k.create_revision, k.value, "
           "p.id AS pid, p.create_revision AS pcrev, p.value AS pvalue FROM kine AS k "
           "LEFT JOIN kine AS p ON p.id = k.prev_revision "
           "WHERE k.id > $1 AND {cond} ORDER BY k.id LIMIT $2")
_START = ("SELECT GREATEST(1, (SELECT MAX(id) FROM kine), "
          "(SELECT value FROM kine_meta WHERE key = 'compact_revision'))")
_COMPACT_LOCK = "SELECT value FROM kine_meta WHERE key = 'compact_revision' FOR UPDATE"
_COMPACT_SUPERSEDED = ("DELETE FROM kine WHERE id IN (SELECT prev_revision FROM kine "
                       "WHERE id > $1 AND id <= $2 AND prev_revision != 0)")
_COMPACT_TOMBSTONES = "DELETE FROM kine WHERE deleted = 1 AND id > $1 AND id <= $2"
_SET_COMPACT = "UPDATE kine_meta SET value = $1 WHERE key = 'compact_revision'"

_POLL_BATCH = 1000  # rows per poll query
_POLL_INTERVAL = 1.0  # seconds between polls when no notification arrives (a missed NOTIFY)
_GAP_WAIT = 0.5  # seconds an id may stay missing before the poller fills it
_HOLE_WAIT = 0.02  # seconds before the poller looks for an id missing before this server's rows
_PUBLISH_WAIT = 5.0  # seconds a writer waits to see its own row published
_WRITE_TRIES = 10
_WRITE_BATCH_MAX = 200  # writes per round trip
_WRITE_BATCHES = 2  # round trips of writes in flight at once (the pool has more for reads)
_COMPACT_CHUNK = 5000
# Longest key in bytes: a btree index row holds at most ~2.7 kB (kine_name_id, with the id).
_MAX_KEY_BYTES = 2048
_CONNECT_TIMEOUT = 5.0
_COMMAND_TIMEOUT = 10.0
_RECONNECT_MAX = 2.0

# A write waiting for its batch: (op, key, revision, value, the writer's future).
_QueuedWrite = tuple[int, str, int, bytes, "asyncio.Future[asyncpg.Record]"]

class _RefusedError(StoreError):
    """The database answered with an error: the statement's transaction rolled back."""


# What a lost or refused connection raises: the datastore is unavailable, not the request wrong.
# (InternalClientError: a pool connection the server has just closed, before the driver saw it.)
_UNAVAILABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                asyncpg.InternalClientError,
                asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError,
                asyncpg.CrashShutdownError, asyncpg.TooManyConnectionsError)


def _dsn(endpoint: str, cafile: str, certfile: str, keyfile: str) -> str:
    """The endpoint with --datastore-cafile/certfile/keyfile as libpq's ssl* parameters."""
    parts = urlsplit(endpoint)
    query = dict(parse_qsl(parts.query))
    for name, path in (("sslrootcert", cafile), ("sslcert", certfile), ("sslkey", keyfile)):
        if path:
            query.setdefault(name, path)
    if cafile:
        query.setdefault("sslmode", "verify-full")
    return urlunsplit(parts._replace(query=urlencode(query)))


def _range(prefix: str, start_key: str, first: int) -> tuple[str, list[str]]:
    """SQL bounds for keys under prefix from start_key; parameters numbered from $first.

    PostgreSQL text cannot hold NUL; the registry pages with `last key + "\\0"`, which is the
    smallest key after `last key`, so a trailing NUL becomes a strict bound."""
    strict = False
    if start_key.endswith("\x00"):
        start_key, strict = start_key.rstrip("\x00"), True
    if start_key and start_key >= prefix:
        lo, op = start_key, (">" if strict else ">=")
    else:
        lo, op = prefix, ">="
    hi = prefix_end(prefix)
    if hi is None:
        return f"k.name {op} ${first}", [lo]
    return f"k.name {op} ${first} AND k.name < ${first + 1}", [lo, hi]


def _event(row: asyncpg.Record) -> Event:
    kv = KeyValue(row["name"], row["create_revision"], row["id"], row["value"])
    prev = None
    if row["pid"] is not None and not row["created"]:
        prev = KeyValue(row["name"], row["pcrev"] or 0, row["pid"], row["pvalue"] or b"")
    return Event(create=bool(row["created"]), delete=bool(row["deleted"]), kv=kv, prev_kv=prev)


def _live(key: str, row: asyncpg.Record) -> KeyValue | None:
    """The newest row kine_write read, if it is a live object."""
    if row["cur_id"] is None or row["cur_deleted"]:
        return None
    return KeyValue(key, row["cur_create_revision"], row["cur_id"], row["cur_value"])


def _write_event(op: int, key: str, value: bytes, row: asyncpg.Record) -> Event:
    """The event of a row kine_write wrote, as the poller would read it back."""
    rev = row["rev"]
    if op == _CREATE:
        return Event(create=True, delete=False, kv=KeyValue(key, rev, rev, value))
    prev = _live(key, row)
    assert prev is not None
    if op == _DELETE:
        return Event(create=False, delete=True,
                     kv=KeyValue(key, prev.create_revision, rev, prev.value), prev_kv=prev)
    return Event(create=False, delete=False,
                 kv=KeyValue(key, prev.create_revision, rev, value), prev_kv=prev)


class PostgresBackend:
    """Backend on a PostgreSQL database shared by every server. `await start()` before use.

    `_rev` is the newest revision this server has published: every id up to it is
    committed or filled, so reads at `_rev` and watches from it are stable and gap-free."""

    def __init__(self, endpoint: str, *, cafile: str = "", certfile: str = "",
                 keyfile: str = "", compact_interval: float = 300.0,
                 compact_min_retain: int = 1000, checkpoint_interval: float = 0.0,
                 pool_size: int = 8) -> None:
        del checkpoint_interval  # PostgreSQL checkpoints itself; kept for one constructor shape
        self.endpoint = redact_endpoint(endpoint)
        self._dsn = _dsn(endpoint, cafile, certfile, keyfile)
        self._pool_size = pool_size
        self._compact_interval = compact_interval
        self._compact_min_retain = compact_min_retain
        self._pool: asyncpg.Pool | None = None
        self._rev = 0
        self._compact_rev = 0
        self._broadcaster = Broadcaster()
        self._wake = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._gap: tuple[int, float] | None = None  # (missing id, fill deadline)
        self._token = secrets.token_hex(8)  # this server's NOTIFY payload
        self._local: dict[int, Event | None] = {}  # committed here, not yet published
        self._hole_timer: asyncio.TimerHandle | None = None
        self._notifier: asyncio.Task[None] | None = None
        self._queued: list[_QueuedWrite] = []  # writes waiting for a batch
        self._flushers: set[asyncio.Task[None]] = set()  # tasks sending batches
        self._notify_again = False
        self._compact_lock = asyncio.Lock()
        self._maintenance: Maintenance | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, create the schema, start the poller. StoreError with one clear line if the
        database cannot be reached or refuses us."""
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size, timeout=_CONNECT_TIMEOUT,
                command_timeout=_COMMAND_TIMEOUT, reset=_keep_session)
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                for stmt in SCHEMA:
                    await conn.execute(stmt)
            self._rev = await self._pool.fetchval(_START)
            self._compact_rev = await self._pool.fetchval(
                "SELECT value FROM kine_meta WHERE key = 'compact_revision'")
        except (asyncpg.PostgresError, ssl.SSLError, TimeoutError, *_UNAVAILABLE) as e:
            if self._pool is not None:
                self._pool.terminate()
            raise StoreError(f"cannot use the datastore {self.endpoint}: {_describe(e)}") from None
        self._poller = asyncio.create_task(self._poll_forever(), name="store-poll")
        self._maintenance = Maintenance(
            current_revision=lambda: self._rev, compact_revision=lambda: self._compact_rev,
            compact=self.compact, checkpoint=_nothing,
            compact_interval=self._compact_interval,
            compact_min_retain=self._compact_min_retain, checkpoint_interval=0)
        self._maintenance.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._maintenance is not None:
            await self._maintenance.stop()
        await cancel_and_wait(self._poller)
        if self._hole_timer is not None:
            self._hole_timer.cancel()
        await cancel_and_wait(self._notifier)
        self._broadcaster.close()
        self._release_waiters(None)
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 5)
            except (TimeoutError, *_UNAVAILABLE):
                self._pool.terminate()

    @property
    def watcher_count(self) -> int:
        return self._broadcaster.watcher_count

    async def _db(self, call: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """Run a call on the pool; a lost datastore becomes StoreUnavailableError."""
        if self._closed or self._pool is None:
            raise StoreError("store is closed")
        try:
            return await call(self._pool)
        except TimeoutError:
            raise StoreUnavailableError(
                f"the datastore {self.endpoint} did not answer within {_COMMAND_TIMEOUT:.0f}s",
                timeout=True) from None
        except _UNAVAILABLE as e:
            raise StoreUnavailableError(
                f"the datastore {self.endpoint} is unavailable: {_describe(e)}") from None
        except asyncpg.PostgresError as e:
            raise _RefusedError(f"datastore error: {_describe(e)}") from None

    # ------------------------------------------------------------------ reads

    async def current_revision(self) -> int:
        return self._rev

    async def compact_revision(self) -> int:
        return self._compact_rev

    async def _read_at(self, revision: int) -> int:
        """The revision a read runs at; a revision another server has written but this
        server's poller has not yet published is waited for briefly, then refused."""
        if revision > self._rev:
            await self._published(revision, 0.5)
        return revision if revision > 0 else self._rev

    async def _read(self, sql: str, *args: Any) -> tuple[int, list[asyncpg.Record]]:
        """(compact revision, rows) of one read statement wrapped by _WITH_COMPACT."""
        rows = await self._db(lambda p: p.fetch(_WITH_COMPACT.format(sql), *args))
        if not rows:
            raise StoreError("datastore is missing its compact revision")
        compact = rows[0]["compact"]
        self._compact_rev = max(self._compact_rev, compact)
        return compact, [r for r in rows if r["id"] is not None]

    async def get(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None]:
        if revision > 0:
            await self._read_at(revision)
            check_read_revision(revision, self._rev, self._compact_rev)
            compact, rows = await self._read(_LATEST_AT, key, revision)
            check_read_revision(revision, self._rev, compact)
            row = rows[0] if rows else None
        else:  # the newest row: no compaction can refuse it
            row = await self._db(lambda p: p.fetchrow(_LATEST, key))
        current = max(self._rev, row["id"] if row else 0)
        if row is None or row["deleted"]:
            return current, None
        return current, KeyValue(key, row["create_revision"], row["id"], row["value"])

    async def list(self, prefix: str, start_key: str = "", limit: int = 0,
                   revision: int = 0) -> tuple[int, list[KeyValue]]:
        at = await self._read_at(revision)
        check_read_revision(revision, self._rev, self._compact_rev)
        cond, args = _range(prefix, start_key, 3)
        compact, rows = await self._read(_LIST.format(range=cond), at,
                                         limit if limit > 0 else None, *args)
        check_read_revision(revision, self._rev, compact)
        return at, [KeyValue(r["name"], r["create_revision"], r["id"], r["value"])
                    for r in rows]

    async def count(self, prefix: str) -> tuple[int, int]:
        at = self._rev
        cond, args = _range(prefix, "", 2)
        n = await self._db(lambda p: p.fetchval(_COUNT.format(range=cond), at, *args))
        return at, n

    # ------------------------------------------------------------------ watch

    async def watch(self, prefix: str, revision: int) -> WatchStream:
        # Subscribe, then replay up to the published revision at that moment: later rows
        # reach the subscription from the poller, so nothing is missed or seen twice.
        sub = self._broadcaster.subscribe(prefix)
        at = self._rev
        if revision <= 0:
            return WatchStream(self._broadcaster, sub, [], 0, at, self._compact_rev)
        try:
            replay = await self._replay(prefix, revision, at)
        except BaseException:
            self._broadcaster.unsubscribe(sub)
            raise
        return WatchStream(self._broadcaster, sub, replay, max(at, revision), at,
                           self._compact_rev)

    async def _replay(self, prefix: str, revision: int, at: int) -> list[Event]:
        cond, args = _range(prefix, "", 4)
        sql = _EVENTS.format(cond=f"k.id <= $3 AND {_REAL} AND {cond}")
        events: list[Event] = []
        after = revision
        while after < at:
            compact, rows = await self._read(sql, after, _POLL_BATCH, at, *args)
            if revision < compact:
                raise CompactedError(revision, compact)
            events.extend(_event(r) for r in rows)
            if len(rows) < _POLL_BATCH:
                break
            after = rows[-1]["id"]
        return events

    # ------------------------------------------------------------------ writes

    async def create(self, key: str, value: bytes) -> int:
        row = await self._write(_CREATE, key, 0, value)
        if not row["rev"]:
            raise KeyExistsError(key)
        return row["rev"]

    async def update(self, key: str, value: bytes,
                     revision: int) -> tuple[int, KeyValue | None, bool]:
        row = await self._write(_UPDATE, key, revision, value)
        if not row["rev"]:
            return self._rev, _live(key, row), False
        return row["rev"], KeyValue(key, row["cur_create_revision"], row["rev"], value), True

    async def delete(self, key: str, revision: int = 0) -> tuple[int, KeyValue | None, bool]:
        row = await self._write(_DELETE, key, revision, b"")
        if not row["rev"]:
            return self._rev, _live(key, row), False
        return row["rev"], _live(key, row), True

    async def _write(self, op: int, key: str, revision: int, value: bytes) -> asyncpg.Record:
        """kine_write's row (rev 0: the condition failed), retried while other writers take
        the key's successor slot. A written row is published by this server before it returns,
        like SQLite's group commit, so a read or a watch here right after the write sees it."""
        _check_key(key)
        for _ in range(_WRITE_TRIES):
            fut: asyncio.Future[asyncpg.Record] = asyncio.get_running_loop().create_future()
            self._queued.append((op, key, revision, value, fut))
            # done() is set in the step a sender finds the queue empty (its done callback
            # runs later): a write queued after that starts a new sender
            if sum(not t.done() for t in self._flushers) < _WRITE_BATCHES:
                task = asyncio.create_task(self._flush_writes(), name="store-write")
                self._flushers.add(task)
                task.add_done_callback(self._flushers.discard)
            row = await fut
            rev = row["rev"]
            if rev < 0:
                continue
            if rev and not await self._published(rev, _PUBLISH_WAIT, poll=False):
                # Bounded: the row is durable anyway, and the poller may be reconnecting.
                log.warning("revision %d is written but not yet published by this server "
                            "after %.0fs", rev, _PUBLISH_WAIT)
            return row
        raise self._contended(key)

    async def _flush_writes(self) -> None:
        """Send the queued writes in batches until none is left. A batch is sorted by key, so
        that two servers' batches wait for each other's rows in one order (no deadlock).
        A write whose writer was cancelled while it waited is dropped, not written."""
        while self._queued:
            batch = sorted((w for w in self._queued[:_WRITE_BATCH_MAX] if not w[4].cancelled()),
                           key=lambda w: w[1])
            del self._queued[:_WRITE_BATCH_MAX]
            if batch:
                await self._send(batch)

    async def _send(self, batch: list[_QueuedWrite]) -> None:
        """Send one batch and answer its writers. A batch the database refused has rolled
        back: it is sent again one write at a time, so that only the bad write fails."""
        try:
            rows = await self._db(lambda p: p.fetch(
                _WRITE_BATCH, [w[0] for w in batch], [w[1] for w in batch],
                [w[2] for w in batch], [w[3] for w in batch]))
        except _RefusedError as e:
            if len(batch) == 1:
                self._fail(batch, e)
                return
            for write in batch:
                await self._send([write])
            return
        except BaseException as e:
            # the batch may have committed unseen: the poller looks for it at once
            self._wake.set()
            self._fail(batch, e if isinstance(e, Exception) else StoreError("store is closed"))
            if not isinstance(e, Exception):
                raise
            return
        try:
            self._written(batch, rows)
        except Exception:  # noqa: BLE001 - its writers must get an answer, and the next batch go
            log.exception("publishing a written batch failed; the poller publishes its rows")
            self._wake.set()
            self._fail(batch, StoreError("the write's outcome is unknown: publishing it failed "
                                         "(see the server log)"))

    @staticmethod
    def _fail(batch: list[_QueuedWrite], error: Exception) -> None:
        for *_, fut in batch:
            if not fut.done():
                fut.set_exception(error)

    def _written(self, batch: list[_QueuedWrite], rows: list[asyncpg.Record]) -> None:
        """Publish a committed batch's rows (in revision order, see _committed), then answer
        its writers; done here, not by the writers, so a writer gone meanwhile loses nothing."""
        for (op, key, _, value, _), row in zip(batch, rows, strict=True):
            rev = row["rev"]
            if rev < 0:
                self._committed(-rev, None)  # the gap row under this id is no event
            elif rev:
                self._committed(rev, _write_event(op, key, value, row))
        if any(row["rev"] for row in rows):
            self._notify_others()
        for (*_, fut), row in zip(batch, rows, strict=True):
            if not fut.done():
                fut.set_result(row)

    def _notify_others(self) -> None:
        """Wake the other servers' pollers for this server's new rows: one NOTIFY in flight at
        a time, and one more after it if rows were written meanwhile (a poller reads every row
        after its last one anyway, and a NOTIFY lost here costs them at most their 1 s poll)."""
        if self._notifier is None:
            self._notifier = asyncio.create_task(self._notify_loop(), name="store-notify")
        else:
            self._notify_again = True

    async def _notify_loop(self) -> None:
        try:
            while True:
                self._notify_again = False
                await self._db(lambda p: p.execute(_NOTIFY.format(self._token)))
                if not self._notify_again:
                    return
        except StoreError as e:
            log.debug("NOTIFY not sent (%s): other servers find the rows at their next poll", e)
        finally:
            self._notifier = None

    def _contended(self, key: str) -> StoreError:
        return StoreError(f"key {key} changed under {_WRITE_TRIES} attempts in a row; retry")

    async def compact(self, revision: int) -> int:
        """Remove history up to `revision` (clamped to the published revision), in chunks;
        servers sharing the database serialise on the kine_meta row."""
        async with self._compact_lock:
            target = min(revision, self._rev)
            while self._compact_rev < target:
                hi = min(self._compact_rev + _COMPACT_CHUNK, target)
                self._compact_rev = await self._db(lambda p, hi=hi: self._compact_chunk(p, hi))
            return self._compact_rev

    @staticmethod
    async def _compact_chunk(pool: asyncpg.Pool, hi: int) -> int:
        async with pool.acquire() as conn, conn.transaction():
            lo = await conn.fetchval(_COMPACT_LOCK)
            if hi <= lo:
                return lo
            await conn.execute(_COMPACT_SUPERSEDED, lo, hi)
            await conn.execute(_COMPACT_TOMBSTONES, lo, hi)
            await conn.execute(_SET_COMPACT, hi)
            return hi

    # ------------------------------------------------------------------ publication

    async def _published(self, rev: int, timeout: float, *, poll: bool = True) -> bool:
        """Wait until `rev` is published, at most `timeout` seconds; `poll`: ask the poller to
        look now (a revision another server wrote; this server's writes publish themselves)."""
        if rev <= self._rev or self._closed:
            return True
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (rev, next(self._seq), fut))
        if poll:
            self._wake.set()
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            return False
        return True

    def _release_waiters(self, upto: int | None) -> None:
        while self._waiters and (upto is None or self._waiters[0][0] <= upto):
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)

    def _committed(self, rev: int, event: Event | None) -> None:
        """A row this server has committed (None: a gap row, no event): published at once if
        every id before it is, else when the ids before it are (written here, or found by
        the poller), so events stay in revision order with no gap."""
        if rev <= self._rev:
            return
        self._local[rev] = event
        self._publish_local()

    def _publish_local(self) -> None:
        """Publish the run of this server's committed rows that follows `_rev`. Rows left
        behind a missing id make the poller look for it after _HOLE_WAIT: the missing id is
        usually a write of this server about to return, else another server's or a lost one."""
        rev, events = self._rev, []
        while rev + 1 in self._local:
            rev += 1
            event = self._local.pop(rev)
            if event is not None:
                events.append(event)
        if rev > self._rev:
            self._publish(rev, events)
        if not self._local:
            if self._hole_timer is not None:
                self._hole_timer.cancel()
                self._hole_timer = None
        elif self._hole_timer is None:
            self._hole_timer = asyncio.get_running_loop().call_later(_HOLE_WAIT, self._hole)

    def _hole(self) -> None:
        self._hole_timer = None
        self._wake.set()

    async def _poll_forever(self) -> None:
        """One LISTEN connection: poll after each notification, and every second anyway (a
        NOTIFY lost with a connection must not lose an event). Reconnects after an outage."""
        delay = 0.1
        while not self._closed:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=_CONNECT_TIMEOUT,
                                             command_timeout=_COMMAND_TIMEOUT)
                await conn.add_listener(_CHANNEL, self._notified)
                conn.add_termination_listener(lambda _c: self._wake.set())
                if delay > 0.1:
                    log.info("datastore %s is back; watches resume from revision %d",
                             self.endpoint, self._rev)
                delay = 0.1
                while not self._closed:
                    self._wake.clear()
                    more = await self._poll_once(conn)
                    if not more:
                        await self._sleep_until_woken()
            except asyncio.CancelledError:
                raise
            except (asyncpg.PostgresError, TimeoutError, *_UNAVAILABLE) as e:
                if delay == 0.1:
                    log.warning("datastore %s: watch poller lost its connection (%s); "
                                "reconnecting", self.endpoint, _describe(e))
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX)
            finally:
                if conn is not None:
                    conn.terminate()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload != self._token:  # another server's write (this server's publish themselves)
            self._wake.set()

    async def _sleep_until_woken(self) -> None:
        timeout = _POLL_INTERVAL
        if self._gap is not None:
            timeout = min(timeout, max(0.0, self._gap[1] - asyncio.get_running_loop().time()))
        await wait_event(self._wake, timeout)

    async def _poll_once(self, conn: asyncpg.Connection) -> bool:
        """Publish the rows after `_rev` up to the first missing id (this server's own rows
        may have been published, or may fill in, while the query ran); True if more are
        ready."""
        rows = await conn.fetch(_WITH_COMPACT.format(_EVENTS.format(cond="true")), self._rev,
                                _POLL_BATCH)
        compact = rows[0]["compact"] if rows else 0
        if compact > self._rev:
            self._skip_compacted(compact)
            return True
        self._compact_rev = max(self._compact_rev, compact)
        found = {r["id"]: r for r in rows if r["id"] is not None and r["id"] > self._rev}
        expected = self._rev + 1
        events: list[Event] = []
        while True:
            if expected in self._local:
                event = self._local.pop(expected)
            elif expected in found:
                row = found[expected]
                event = _event(row) if row["create_revision"] > 0 else None
            else:
                break
            if event is not None:
                events.append(event)
            expected += 1
        if expected - 1 > self._rev:
            self._publish(expected - 1, events)
        for rev in [r for r in self._local if r <= self._rev]:
            del self._local[rev]
        self._publish_local()
        above = [rev for rev in itertools.chain(found, self._local) if rev > self._rev]
        if above:
            return await self._on_gap(conn, self._rev + 1, min(above))
        self._gap = None
        return len(rows) == _POLL_BATCH

    def _skip_compacted(self, compact: int) -> None:
        """This server fell behind another server's compaction (its poller was cut off
        longer than the retained history): the events in between are gone, so every watch
        ends (clients re-watch and get 410, then re-list) and polling goes on from there."""
        log.warning("datastore compacted to %d while this server was at %d: ending watches",
                    compact, self._rev)
        self._broadcaster.end_all()
        self._compact_rev = compact
        self._publish(compact, [])

    async def _on_gap(self, conn: asyncpg.Connection, missing: int, committed: int) -> bool:
        """Ids from `missing` up to the committed row `committed` are missing: writers between
        nextval and commit, or ones that died or rolled back there (a failed batch leaves up
        to _WRITE_BATCH_MAX). Wait for the first a little; then take them all with gap rows
        (kine's fill) in one statement, which makes a late writer of any retry under a new
        id (kine_write's conflict on the id)."""
        now = asyncio.get_running_loop().time()
        if self._gap is None or self._gap[0] != missing:
            self._gap = (missing, now + _GAP_WAIT)
            return False
        if now < self._gap[1]:
            return False
        log.info("filling revisions %d-%d: not committed after %.1fs", missing, committed - 1,
                 _GAP_WAIT)
        await conn.execute(_FILL, missing, committed - 1)
        self._gap = None
        return True

    def _publish(self, rev: int, events: list[Event]) -> None:
        self._rev = rev
        self._broadcaster.publish(events)
        self._release_waiters(rev)


async def _nothing() -> None:
    return None


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """The pool's reset of a released connection. asyncpg rolls back an open transaction
    itself; its default reset adds a round trip per statement (UNLISTEN, RESET ALL, CLOSE ALL,
    advisory unlock) for session state this backend never sets on a pool connection (LISTEN is
    on the poller's own connection, the schema lock is transaction-scoped)."""
    return None


def _check_key(key: str) -> None:
    """Refuse a key PostgreSQL cannot store, before it joins (and fails) a batch."""
    if "\x00" in key:
        raise InvalidKeyError(f"key {key!r} contains a NUL character")
    size = len(key.encode())
    if size > _MAX_KEY_BYTES:
        raise InvalidKeyError(f"key {key[:80]}... is {size} bytes long; the datastore holds "
                              f"keys of at most {_MAX_KEY_BYTES} bytes")


def _describe(e: BaseException) -> str:
    """A one-line reason for a driver error, without the traceback."""
    if isinstance(e, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return f"{e} (check the user and password in the endpoint)"
    if isinstance(e, asyncpg.InvalidCatalogNameError):
        return f"{e} (create it first, e.g. createdb)"
    if isinstance(e, TimeoutError):
        return "no answer (timed out)"
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text
