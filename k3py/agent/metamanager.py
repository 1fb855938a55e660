"""The agent's local cache in <data-dir>/agent/meta.db: desired pods, the configmaps, secrets,
claims and volumes they need and the devices (and device models) bound to this node, as last
received from cloudhub, status messages queued for the server, and the device twin's state
(each device's twin record and the report not sent yet: agent/devices/manager.py).

edgehub calls `apply` (persist, then ACK) and `queue`/`acked` for the up direction; the pod
syncer reads `pods()` and is woken through `changed`; on restart the agent starts from here.
SQLite through apsw, as the server's store (server/store/sqlite.py); the file is the one the
agent wrote with the stdlib sqlite3 before, so an agent upgraded in place keeps its cache.
Secrets and service-account tokens are sealed with the node key (metakey.py, meta.key next to
meta.db): a plain row of theirs left by an older agent is sealed when the file is opened, with
nothing of it left in the file's free pages or its WAL; a row the key cannot open (the key file
was lost) is dropped and the next connect brings a full snapshot."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

import apsw
import orjson

from k3py.agent.metakey import SEALED_PREFIX, InvalidTag, MetaKey
from k3py.tunnel.message import (
    OP_DELETE,
    OP_INSERT,
    OP_SYNC,
    OP_UPDATE,
    Message,
    split_resource_key,
)
from k3py.tunnel.protocol import DOWN_KINDS, POD_TOKENS_KIND, full_sync

__all__ = ["MetaManager", "DiskFullError", "CACHED_KINDS", "MAX_QUEUED_EVENTS"]

log = logging.getLogger(__name__)

CACHED_KINDS = DOWN_KINDS  # every kind the server sends down is kept
SEALED_KINDS = frozenset({"secrets", POD_TOKENS_KIND})  # stored sealed with the node key

# Events queued for the server at most, as upstream's event broadcaster queue (client-go's
# maxQueuedEvents): beyond it the oldest queued Event is dropped. Statuses need no cap: there
# is one queued message per key (pod status, node status, lease, device report).
MAX_QUEUED_EVENTS = 1000
_EVENTS_PREFIX = "events/"  # resource_key("events", ...): the keys of queued Events

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS objects (kind TEXT NOT NULL, namespace TEXT NOT NULL, "
    "name TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY (kind, namespace, name))",
    # rowid order = order queued; INSERT OR REPLACE on the key moves a message to the end
    "CREATE TABLE IF NOT EXISTS outbox (key TEXT PRIMARY KEY, id TEXT NOT NULL, "
    "body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # the device twin (agent/devices): each device's twin record and its report not yet sent
    "CREATE TABLE IF NOT EXISTS twins (namespace TEXT NOT NULL, name TEXT NOT NULL, "
    "record BLOB NOT NULL, pending BLOB, PRIMARY KEY (namespace, name))",
)


_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # FULL: the WAL is fsynced at each commit, so what the agent ACKed to the server (apply
    # persists, then edgehub ACKs) survives a power cut too, not only a kill; with NORMAL the
    # server would not resend what the last commits lost (bench/autonomy_store.py: the cost)
    "PRAGMA synchronous=FULL",
)
# not durable (bench/hollow.py's simulated nodes, hundreds in one process on one disk, measure
# the server, not the disk's fsyncs): a crash may lose the last commits
_NOT_DURABLE = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=OFF")


# what opening a WAL file says when its -shm file cannot be given its first pages
_SHM_ERRORS = frozenset({apsw.SQLITE_IOERR_SHMSIZE, apsw.SQLITE_IOERR_SHMOPEN,
                         apsw.SQLITE_IOERR_SHMMAP})


class DiskFullError(Exception):
    """meta.db's file system is full: the write was not made (for `apply`: not ACKed, so the
    server sends it again). Writes work again once there is space."""

    def __init__(self, path: str) -> None:
        super().__init__(f"the agent's disk is full: cannot write {path}; not persisted")
        self.path = path


class MetaManager:
    """SQLite writes run in a worker thread, one at a time, each committed before it returns
    (apsw's autocommit; a sync is one transaction); reads come from memory."""

    def __init__(self, path: str, key_path: str = "", *, durable: bool = True) -> None:
        self.path = path
        self.durable = durable
        self.key_path = key_path or os.path.join(os.path.dirname(path) or ".", "meta.key")
        self._key: MetaKey | None = None
        self._db: apsw.Connection | None = None
        self._objects: dict[str, dict[tuple[str, str], dict]] = {k: {} for k in CACHED_KINDS}
        # as stored when opened: (namespace, name) -> (twin record, pending report or None)
        self._twins: dict[tuple[str, str], tuple[dict, dict | None]] = {}
        self._lock = asyncio.Lock()
        self.changed = asyncio.Event()
        self.listeners: list[Callable[[str], None]] = []
        # True once a full snapshot was stored: the server may then resume instead of resync
        self.synced = False
        self.disk_full = False  # the last write failed for want of space
        # at most this many Events queued; those dropped over it since the agent started
        self.max_queued_events = MAX_QUEUED_EVENTS
        self.events_dropped = 0

    # ---------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        try:
            db = self._connect(exclusive=False)
        except apsw.IOError as e:
            if e.extendedresult not in _SHM_ERRORS:
                raise
            # no room on the disk for the shared-memory index (meta.db-shm): keep it in this
            # process's memory instead, which locks the file to the agent, so that the agent
            # still starts from its cache; writes wait for space as ever
            log.error("no space for %s-shm: meta.db opened for this process only", self.path)
            db = self._connect(exclusive=True)
        self._key = MetaKey.load_or_create(self.key_path)
        plain, lost = [], []
        for kind, ns, name, body in db.execute("SELECT kind, namespace, name, body FROM objects"):
            if kind not in self._objects:
                continue
            if kind in SEALED_KINDS and not body.startswith(SEALED_PREFIX):
                plain.append((kind, ns, name))
            try:
                self._objects[kind][(ns, name)] = self._decode(kind, ns, name, body)
            except InvalidTag:
                lost.append((kind, ns, name))
        if plain or lost:
            self._reseal(db, plain, lost)
        self.synced = not lost and \
            db.execute("SELECT 1 FROM state WHERE key='synced'").fetchone() is not None
        for ns, name, record, pending in db.execute(
                "SELECT namespace, name, record, pending FROM twins"):
            self._twins[(ns, name)] = (orjson.loads(record),
                                       orjson.loads(pending) if pending else None)
        self._db = db

    def _reseal(self, db: apsw.Connection, plain: list, lost: list) -> None:
        """Seal the plain rows of sealed kinds, drop the ones the key cannot open, and leave
        no copy of the plain ones in free pages (secure_delete) or the WAL (truncated)."""
        log.warning("meta.db: sealing %d plain secret(s)/token(s) with %s; dropping %d sealed "
                    "with another key (a full sync replaces them)", len(plain), self.key_path,
                    len(lost))
        db.execute("PRAGMA secure_delete=ON").fetchall()
        with db:
            for kind, ns, name in plain:
                self._put_row(db, kind, ns, name, self._objects[kind][(ns, name)])
            db.executemany("DELETE FROM objects WHERE kind=? AND namespace=? AND name=?", lost)
            if lost:
                db.execute("DELETE FROM state WHERE key='synced'")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        db.execute("PRAGMA secure_delete=OFF").fetchall()

    def _encode(self, kind: str, ns: str, name: str, obj: dict) -> bytes:
        body = orjson.dumps(obj)
        if kind not in SEALED_KINDS:
            return body
        assert self._key is not None
        return self._key.seal(f"{kind}/{ns}/{name}".encode(), body)

    def _decode(self, kind: str, ns: str, name: str, body: bytes) -> dict:
        if body.startswith(SEALED_PREFIX):
            assert self._key is not None
            body = self._key.open(f"{kind}/{ns}/{name}".encode(), body)
        return orjson.loads(body)

    def _connect(self, exclusive: bool) -> apsw.Connection:
        db = apsw.Connection(self.path)
        try:
            db.setbusytimeout(5000)
            if exclusive:
                db.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall()
            for stmt in _PRAGMAS if self.durable else _NOT_DURABLE:
                db.execute(stmt).fetchall()
            for stmt in _SCHEMA:
                db.execute(stmt)
        except apsw.FullError:  # a new meta.db on a full disk
            db.close()
            raise DiskFullError(self.path) from None
        except BaseException:
            db.close()
            raise
        return db

    async def close(self) -> None:
        if self._db is not None:
            async with self._lock:
                db, self._db = self._db, None
                await asyncio.to_thread(db.close)

    # ---------------------------------------------------------------- reads

    def pods(self) -> list[dict]:
        return list(self._objects["pods"].values())

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        return self._objects.get(kind, {}).get((namespace, name))

    def objects(self, kind: str) -> list[dict]:
        return list(self._objects.get(kind, {}).values())

    def twin_state(self) -> dict[tuple[str, str], tuple[dict, dict | None]]:
        """The device twins as stored when opened: (record, pending report or None)."""
        return dict(self._twins)

    # ---------------------------------------------------------------- down: desired state

    async def apply(self, msg: Message) -> bool:
        """Persist what a resource message says; True if it was understood. Idempotent.
        A sync replaces the kinds it holds; a partial one (protocol.full_sync) tells the
        listeners its kinds changed, not that everything did."""
        op = msg.route.operation
        if op == OP_SYNC:
            content = msg.content if isinstance(msg.content, dict) else {}
            snapshot = {k: [o for o in content.get(k) or [] if isinstance(o, dict)]
                        for k in CACHED_KINDS if k in content}
            fresh = {kind: {_nsname(o): o for o in objs} for kind, objs in snapshot.items()}
            full = full_sync(content)
            async with self._lock:
                await self._commit(self._sync_rows, {
                    kind: _difference(self._objects[kind], objs) for kind, objs in fresh.items()},
                    full)
                self._objects.update(fresh)
            if full:
                self.synced = True
                self._notify("sync")
            else:
                for kind in fresh:
                    self._notify(kind)
            return True
        try:
            kind, ns, name, sub = split_resource_key(msg.route.resource)
        except ValueError:
            return False
        if kind not in self._objects or sub:
            return False
        ns = ns or ""
        if op in (OP_INSERT, OP_UPDATE) and isinstance(msg.content, dict):
            async with self._lock:
                await self._commit(self._put_row, kind, ns, name, msg.content)
                self._objects[kind][(ns, name)] = msg.content
        elif op == OP_DELETE:
            async with self._lock:
                await self._commit(self._delete_row, kind, ns, name)
                self._objects[kind].pop((ns, name), None)
        else:
            return False
        self._notify(kind)
        return True

    def _notify(self, what: str) -> None:
        self.changed.set()
        for fn in self.listeners:
            fn(what)

    async def _write(self, fn: Callable, *args) -> None:
        """One write that changes nothing in memory: `_commit` under the write lock."""
        async with self._lock:
            await self._commit(fn, *args)

    async def _commit(self, fn: Callable, *args) -> None:
        """Run fn(db, *args) in a thread, the write lock held by the caller; DiskFullError if
        there was no space (SQLite rolled the write back). The disk filling up and writes
        working again are logged once each. A write that changes the cached objects changes
        them before it lets the lock go, and reads what it builds on after taking it: the
        cache then changes in the order the file does, and no write builds on a cached
        object that an earlier write (still committing) replaces."""
        if self._db is None:
            raise RuntimeError("metamanager is closed")
        try:
            await asyncio.to_thread(fn, self._db, *args)
        except apsw.FullError:
            if not self.disk_full:
                self.disk_full = True
                log.error("the disk under %s is full: cached objects are not updated "
                          "(nor ACKed) until space is freed; running pods go on", self.path)
            raise DiskFullError(self.path) from None
        if self.disk_full:
            self.disk_full = False
            log.warning("%s is written again: the disk has space", self.path)

    def _put_row(self, db: apsw.Connection, kind: str, ns: str, name: str, obj: dict) -> None:
        db.execute("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?)",
                   (kind, ns, name, self._encode(kind, ns, name, obj)))

    @staticmethod
    def _delete_row(db: apsw.Connection, kind: str, ns: str, name: str) -> None:
        db.execute("DELETE FROM objects WHERE kind=? AND namespace=? AND name=?",
                   (kind, ns, name))

    def _sync_rows(self, db: apsw.Connection,
                   changes: dict[str, tuple[list[tuple[str, str]], list[dict]]],
                   full: bool) -> None:
        """A sync's rows: by kind, the (namespace, name)s gone and the objects new or
        changed (_difference); a full sync also marks the cache synced. After a server
        restart a node usually holds every object already: nothing is written again, where
        every row was (flash wear, and a node's seconds of CPU for thousands of rows)."""
        with db:  # one transaction: the old set or the new one, never half of each
            for kind, (gone, changed) in changes.items():
                db.executemany("DELETE FROM objects WHERE kind=? AND namespace=? AND name=?",
                               [(kind, ns, name) for ns, name in gone])
                db.executemany("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?)",
                               [(kind, *_nsname(o), self._encode(kind, *_nsname(o), o))
                                for o in changed])
            if full:
                db.execute("INSERT OR REPLACE INTO state VALUES ('synced', '1')")

    # ---------------------------------------------------------------- up: queued status

    async def queue(self, msg: Message) -> list[str]:
        """Keep an up message until the server ACKs it (survives agent restarts). A message
        with a key replaces the queued one with that key (one status per pod, one Event per
        aggregated Event); queued Events are capped at `max_queued_events`, the oldest dropped
        first: returns the ids dropped (counted in `events_dropped`)."""
        body = orjson.dumps(msg.to_dict())
        key = msg.key or msg.id
        dropped: list[str] = []
        async with self._lock:
            # the cached pod with the status it reports, read under the lock: a pod update
            # being written meanwhile (say its deletion) is in it, not overwritten by it
            reported = self._reported_pod(msg)

            def write(db: apsw.Connection) -> None:
                with db:
                    db.execute("INSERT OR REPLACE INTO outbox VALUES (?, ?, ?)",
                               (key, msg.id, body))
                    if key.startswith(_EVENTS_PREFIX):
                        dropped.extend(_drop_oldest_events(db, self.max_queued_events))
                    if reported is not None:
                        self._put_row(db, "pods", *_nsname(reported), reported)
            try:
                await self._commit(write)
            except DiskFullError:  # edgehub still holds it and sends it: lost only by a restart
                return []
            if reported is not None:
                self._objects["pods"][_nsname(reported)] = reported
        self.events_dropped += len(dropped)
        return dropped

    def _reported_pod(self, msg: Message) -> dict | None:
        """For a pod status report: the cached pod carrying that status, so the cache holds
        what the node last reported (the server does not echo a status back down)."""
        if not isinstance(msg.content, dict) or not isinstance(msg.content.get("status"), dict):
            return None
        try:
            kind, ns, name, sub = split_resource_key(msg.route.resource)
        except ValueError:
            return None
        if kind != "pods" or sub != "status":
            return None
        pod = self._objects["pods"].get((ns or "", name))
        if pod is None or (pod.get("metadata") or {}).get("uid") != msg.content.get("uid"):
            return None
        return {**pod, "status": msg.content["status"]}

    async def acked(self, ids: list[str]) -> None:
        if ids:
            try:
                await self._write(lambda db: db.executemany(
                    "DELETE FROM outbox WHERE id=?", [(i,) for i in ids]))
            except DiskFullError:  # they stay queued: after a restart the server gets them
                pass  # again and treats them as the repeats it already handles

    # ---------------------------------------------------------------- the device twin

    async def save_twins(self, rows: list[tuple[str, str, dict, dict | None]]) -> None:
        """(namespace, name, twin record, pending report or None) per device, one commit."""
        if rows:
            def write(db: apsw.Connection) -> None:
                with db:
                    db.executemany(
                        "INSERT OR REPLACE INTO twins VALUES (?, ?, ?, ?)",
                        [(ns, name, orjson.dumps(rec), orjson.dumps(p) if p is not None
                          else None) for ns, name, rec, p in rows])
            await self._write(write)

    async def delete_twins(self, keys: list[tuple[str, str]]) -> None:
        if keys:
            await self._write(lambda db: db.executemany(
                "DELETE FROM twins WHERE namespace=? AND name=?", keys))

    async def queue_device_report(self, msg: Message, key: tuple[str, str]) -> None:
        """Queue a device's report for the server and mark it sent, in one commit: after a
        crash it is either still pending or in the outbox, never both, never neither."""
        body = orjson.dumps(msg.to_dict())

        def write(db: apsw.Connection) -> None:
            with db:
                db.execute("INSERT OR REPLACE INTO outbox VALUES (?, ?, ?)",
                           (msg.key or msg.id, msg.id, body))
                db.execute("UPDATE twins SET pending=NULL WHERE namespace=? AND name=?", key)
        await self._write(write)

    def queued(self) -> list[Message]:
        """The queued messages in order; call after open(), before the loop starts sending."""
        assert self._db is not None
        out = []
        for key, body in self._db.execute("SELECT key, body FROM outbox ORDER BY rowid"):
            msg = Message.from_dict(orjson.loads(body))
            out.append(Message(msg.header, msg.route, msg.content, key))
        return out


def _drop_oldest_events(db: apsw.Connection, cap: int) -> list[str]:
    """Delete the oldest queued Events beyond `cap`; their ids. The key range
    is the primary key's index, so the count reads at most the queued Events."""
    lo, hi = _EVENTS_PREFIX, _EVENTS_PREFIX[:-1] + chr(ord("/") + 1)
    (n,) = db.execute("SELECT count(*) FROM outbox WHERE key >= ? AND key < ?",
                      (lo, hi)).fetchone()
    if n <= cap:
        return []
    return [i for (i,) in db.execute(
        "DELETE FROM outbox WHERE rowid IN (SELECT rowid FROM outbox WHERE key >= ? AND key < ? "
        "ORDER BY rowid LIMIT ?) RETURNING id", (lo, hi, n - cap))]


def _difference(held: dict[tuple[str, str], dict], fresh: dict[tuple[str, str], dict]
                ) -> tuple[list[tuple[str, str]], list[dict]]:
    """What a full sync changes of one kind: the keys `held` has and `fresh` lacks, and the
    objects of `fresh` that `held` lacks or holds otherwise."""
    return ([key for key in held if key not in fresh],
            [obj for key, obj in fresh.items() if held.get(key) != obj])


def _nsname(obj: dict) -> tuple[str, str]:
    md = obj.get("metadata") or {}
    return md.get("namespace") or "", md.get("name") or ""
