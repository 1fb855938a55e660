"""Snapshots of the embedded SQLite store, as K3s's etcd-snapshot: online, consistent copies
made with SQLite's backup API while the server writes, listed, deleted, pruned, and restored.

`k3py snapshot save|ls|delete|prune` (cli/snapshot.py) calls these on a data dir, whether its
server runs or not; the server runs SnapshotSchedule (--snapshot-schedule-cron); `k3py server
--cluster-reset --cluster-reset-restore-path FILE` calls restore() before it would serve."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import re
from dataclasses import dataclass

import apsw

from k3py.server.controllers.cron import CronSchedule

__all__ = ["Snapshot", "SnapshotError", "SnapshotSchedule", "save", "list_snapshots",
           "delete", "prune", "restore", "snapshot_name", "SCHEDULED_NAME", "ON_DEMAND_NAME"]

log = logging.getLogger("k3py.snapshots")

ON_DEMAND_NAME = "on-demand"  # `k3py snapshot save` without --name, as K3s
SCHEDULED_NAME = "scheduled"  # the server's own, by --snapshot-schedule-cron
_PARTIAL = ".partial"  # a copy under way; never listed
_NOT_SNAPSHOTS = (_PARTIAL, "-journal", "-wal", "-shm")  # SQLite's files beside one
_BUSY_MS = 10_000  # how long a copy waits for the writer's lock


class SnapshotError(Exception):
    """A snapshot operation that cannot be done; the message is one line with the fix."""


@dataclass(frozen=True)
class Snapshot:
    name: str
    path: str
    size: int
    created: dt.datetime

    @property
    def location(self) -> str:
        return "file://" + self.path


def snapshot_name(prefix: str, node: str, when: dt.datetime) -> str:
    """`<prefix>-<node>-<unix seconds>`, K3s's naming."""
    return f"{prefix}-{node}-{int(when.timestamp())}"


def _copy(source_path: str, dest_path: str) -> None:
    """The whole database in one backup step: one read transaction on the source, so the copy
    is one consistent revision even while the server's writer commits (WAL lets both run)."""
    try:
        source = apsw.Connection(source_path, flags=apsw.SQLITE_OPEN_READWRITE)
    except apsw.CantOpenError:
        raise SnapshotError(f"cannot open {source_path}") from None
    try:
        source.setbusytimeout(_BUSY_MS)
        dest = apsw.Connection(dest_path)
        try:
            dest.setbusytimeout(_BUSY_MS)
            with dest.backup("main", source, "main") as backup:
                backup.step()
            # the copy carries the source's WAL mode: a snapshot is one self-contained file
            dest.execute("PRAGMA journal_mode=DELETE")
        finally:
            dest.close()
    except apsw.Error as e:
        raise SnapshotError(f"copying {source_path} to {dest_path} failed: {e}") from None
    finally:
        source.close()


def save(db_path: str, snapshot_dir: str, name: str) -> Snapshot:
    """Copy the store at db_path to snapshot_dir/name (mode 0600) and describe it."""
    if not os.path.isfile(db_path):
        raise SnapshotError(f"no store at {db_path}: start the server once with this "
                            f"--data-dir, or pass the data dir it uses")
    os.makedirs(snapshot_dir, mode=0o700, exist_ok=True)
    path = os.path.join(os.path.abspath(snapshot_dir), name)
    if os.path.exists(path):
        raise SnapshotError(f"snapshot {name} exists already; wait a second or give "
                            f"another --name")
    partial = path + _PARTIAL
    with contextlib.suppress(FileNotFoundError):
        os.unlink(partial)
    try:
        _copy(db_path, partial)
        os.chmod(partial, 0o600)
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return _describe(path)


_STAMP = re.compile(r"-(\d{9,11})$")


def _describe(path: str) -> Snapshot:
    st = os.stat(path)
    name = os.path.basename(path)
    m = _STAMP.search(name)  # the time in the name survives a copy; else the file's mtime
    seconds = int(m[1]) if m else st.st_mtime
    return Snapshot(name, path, st.st_size, dt.datetime.fromtimestamp(seconds, dt.UTC))


def list_snapshots(snapshot_dir: str) -> list[Snapshot]:
    """The snapshots in snapshot_dir, oldest first (by time, then name), as `ls` shows them."""
    try:
        entries = os.scandir(snapshot_dir)
    except FileNotFoundError:
        return []
    with entries:
        found = [_describe(os.path.abspath(e.path)) for e in entries
                 if e.is_file() and not e.name.endswith(_NOT_SNAPSHOTS)]
    return sorted(found, key=lambda s: (s.created, s.name))


def delete(snapshot_dir: str, names: list[str]) -> list[str]:
    """Remove the named snapshots; every name must exist (nothing is removed otherwise)."""
    known = {s.name: s for s in list_snapshots(snapshot_dir)}
    missing = [n for n in names if n not in known]
    if missing:
        raise SnapshotError(f"no snapshot {', '.join(missing)} in {snapshot_dir}; "
                            f"'k3py snapshot ls' lists them")
    for n in names:
        os.unlink(known[n].path)
    return names


def prune(snapshot_dir: str, prefix: str, retention: int) -> list[str]:
    """Keep the newest `retention` snapshots whose name starts with `<prefix>-`; remove the
    older ones (K3s prunes by the snapshot name the same way). Returns the removed names."""
    if retention < 1:
        raise SnapshotError("--snapshot-retention must be at least 1")
    mine = [s for s in list_snapshots(snapshot_dir) if s.name.startswith(prefix + "-")]
    doomed = mine[:-retention]
    for s in doomed:
        os.unlink(s.path)
    return [s.name for s in doomed]


def _check_snapshot(path: str) -> None:
    try:
        conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error:
        raise SnapshotError(f"cannot open {path} as a snapshot") from None
    try:
        ok = conn.execute("PRAGMA quick_check").fetchall()
        has_log = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                               "AND name = 'kine'").fetchall()[0][0]
    except apsw.Error as e:
        raise SnapshotError(f"{path} is not a k3py snapshot ({e})") from None
    finally:
        conn.close()
    if ok != [("ok",)] or not has_log:
        raise SnapshotError(f"{path} is not a k3py snapshot (no intact revision log)")


def _check_not_in_use(db_path: str) -> None:
    """A running server keeps its store open in WAL mode, which an exclusive lock cannot
    get past: refuse to replace a store under a live server."""
    if not os.path.isfile(db_path):
        return
    conn = apsw.Connection(db_path, flags=apsw.SQLITE_OPEN_READWRITE)
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("ROLLBACK")
    except apsw.BusyError:
        raise SnapshotError(f"the store {db_path} is in use by a running server: stop it "
                            f"first (systemctl stop k3py)") from None
    finally:
        conn.close()


def restore(db_path: str, snapshot_path: str, now: dt.datetime | None = None) -> str:
    """Replace the store at db_path with the snapshot's content, the server being stopped.
    The store it replaces is kept beside it as state-old-<unix seconds>.db (K3s keeps
    db/etcd-old-<time>); returns that path ("" when there was no store)."""
    if not os.path.isfile(snapshot_path):
        raise SnapshotError(f"no snapshot file {snapshot_path}; 'k3py snapshot ls' lists "
                            f"the snapshots with their location")
    _check_snapshot(snapshot_path)
    _check_not_in_use(db_path)
    os.makedirs(os.path.dirname(db_path), mode=0o700, exist_ok=True)
    kept = ""
    if os.path.isfile(db_path):
        stamp = int((now or dt.datetime.now(dt.UTC)).timestamp())
        kept = os.path.join(os.path.dirname(db_path), f"state-old-{stamp}.db")
        _copy(db_path, kept)
        os.chmod(kept, 0o600)
    _copy(snapshot_path, db_path)
    return kept


class SnapshotSchedule:
    """The server's scheduled snapshots: one at each time of the cron schedule, then the
    scheduled ones beyond `retention` are pruned. A failed snapshot is logged, not fatal."""

    def __init__(self, db_path: str, snapshot_dir: str, node: str, schedule: CronSchedule,
                 retention: int) -> None:
        self._db_path = db_path
        self._dir = snapshot_dir
        self._node = node
        self._schedule = schedule
        self._retention = retention
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            now = dt.datetime.now(dt.UTC)
            due = self._schedule.next_after(now)
            if due is None:
                log.warning("the snapshot schedule has no time in the next 5 years")
                return
            await asyncio.sleep((due - now).total_seconds())
            await asyncio.to_thread(self.take, due)

    def take(self, when: dt.datetime) -> Snapshot | None:
        """One scheduled snapshot and the pruning after it (in a worker thread)."""
        try:
            snap = save(self._db_path, self._dir,
                        snapshot_name(SCHEDULED_NAME, self._node, when))
            pruned = prune(self._dir, SCHEDULED_NAME, self._retention)
        except (SnapshotError, OSError) as e:
            log.error("scheduled snapshot failed: %s", e)
            return None
        log.info("snapshot %s saved (%d bytes)%s", snap.location, snap.size,
                 f"; pruned {', '.join(pruned)}" if pruned else "")
        return snap
