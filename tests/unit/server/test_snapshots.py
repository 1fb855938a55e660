"""Snapshots of a live SQLite store (k3py.server.snapshots): the copy holds what was written, a
scheduled snapshot prunes to the retention, restore keeps the old store and refuses a store in
use or a file that is no snapshot; the snapshot flags and the cluster-reset pair are checked."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from k3py.cli.flags import UsageError, server_config, snapshot_config
from k3py.server import snapshots
from k3py.server.controllers.cron import parse_cron
from k3py.server.store.sqlite import SQLiteBackend

pytestmark = pytest.mark.unit

P = "/registry/core/configmaps/default/"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
async def store(tmp_path):
    backend = SQLiteBackend(str(tmp_path / "db" / "state.db"), compact_interval=0,
                            checkpoint_interval=0)
    os.makedirs(tmp_path / "db")
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()


async def keys_of(path: str) -> list[str]:
    copy = SQLiteBackend(path, compact_interval=0, checkpoint_interval=0)
    await copy.start()
    try:
        _, kvs = await copy.list(P)
        return [kv.key for kv in kvs]
    finally:
        await copy.close()


async def test_save_copies_the_live_store(store, tmp_path):
    await store.create(P + "a", b"{}")
    snap = snapshots.save(store.path, str(tmp_path / "snaps"), "on-demand-n1-1767225600")
    await store.create(P + "b", b"{}")  # after the copy: not in it
    assert snap.location == f"file://{tmp_path}/snaps/on-demand-n1-1767225600"
    assert snap.created == T0
    assert oct(os.stat(snap.path).st_mode & 0o777) == "0o600"
    assert await keys_of(snap.path) == [P + "a"]
    with pytest.raises(snapshots.SnapshotError, match="exists already"):
        snapshots.save(store.path, str(tmp_path / "snaps"), snap.name)


def test_save_without_a_store_says_which_data_dir(tmp_path):
    with pytest.raises(snapshots.SnapshotError, match="start the server once"):
        snapshots.save(str(tmp_path / "state.db"), str(tmp_path / "snaps"), "x")


async def test_schedule_takes_and_prunes_to_retention(store, tmp_path):
    schedule = snapshots.SnapshotSchedule(store.path, str(tmp_path / "snaps"), "n1",
                                          parse_cron("0 */12 * * *"), retention=2)
    snapshots.save(store.path, str(tmp_path / "snaps"), "on-demand-n1-1000000000")
    for hours in (0, 12, 24):
        assert schedule.take(T0 + dt.timedelta(hours=hours)) is not None
    names = [s.name for s in snapshots.list_snapshots(str(tmp_path / "snaps"))]
    stamp = int(T0.timestamp())
    # on-demand ones are not the schedule's to prune
    assert names == ["on-demand-n1-1000000000", f"scheduled-n1-{stamp + 12 * 3600}",
                     f"scheduled-n1-{stamp + 24 * 3600}"]


async def test_delete_needs_every_name_to_exist(store, tmp_path):
    d = str(tmp_path / "snaps")
    snapshots.save(store.path, d, "a-n1-1000000000")
    with pytest.raises(snapshots.SnapshotError, match="no snapshot b"):
        snapshots.delete(d, ["a-n1-1000000000", "b"])
    assert [s.name for s in snapshots.list_snapshots(d)] == ["a-n1-1000000000"]
    snapshots.delete(d, ["a-n1-1000000000"])
    assert snapshots.list_snapshots(d) == []


async def test_restore_refuses_a_store_in_use_and_a_foreign_file(store, tmp_path):
    snap = snapshots.save(store.path, str(tmp_path / "snaps"), "s-n1-1000000000")
    with pytest.raises(snapshots.SnapshotError, match="in use by a running server"):
        snapshots.restore(store.path, snap.path)
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a database")
    with pytest.raises(snapshots.SnapshotError, match="not a k3py snapshot|cannot open"):
        snapshots.restore(store.path, str(foreign))


async def test_restore_replaces_the_store_and_keeps_the_old_one(tmp_path):
    db = str(tmp_path / "db" / "state.db")
    os.makedirs(tmp_path / "db")
    backend = SQLiteBackend(db, compact_interval=0, checkpoint_interval=0)
    await backend.start()
    await backend.create(P + "old", b"{}")
    snap = snapshots.save(db, str(tmp_path / "snaps"), "s-n1-1000000000")
    await backend.create(P + "new", b"{}")
    await backend.close()
    kept = snapshots.restore(db, snap.path, now=T0)
    assert kept == str(tmp_path / "db" / f"state-old-{int(T0.timestamp())}.db")
    assert await keys_of(db) == [P + "old"]
    assert await keys_of(kept) == [P + "new", P + "old"]


def test_snapshot_flags(tmp_path):
    config = snapshot_config(["--dir", str(tmp_path), "--name", "nightly"], [], environ={})
    assert (config.snapshots_dir, config.name) == (str(tmp_path), "nightly")
    assert snapshot_config(["-d", str(tmp_path)], [], environ={}).snapshots_dir == \
        str(tmp_path / "server" / "db" / "snapshots")
    with pytest.raises(UsageError, match="--name"):
        snapshot_config(["--name", "../x"], [], environ={})
    with pytest.raises(UsageError, match="unknown flag --dir"):
        server_config(["--dir", str(tmp_path)], environ={})


def test_server_snapshot_flags(tmp_path):
    config = server_config(["-d", str(tmp_path)], environ={})
    assert (config.snapshot_schedule_cron, config.snapshot_retention) == ("0 */12 * * *", 5)
    with pytest.raises(UsageError, match="cron schedule"):
        server_config(["--snapshot-schedule-cron", "every day"], environ={})
    with pytest.raises(UsageError, match="needs --cluster-reset"):
        server_config(["--cluster-reset-restore-path", "x"], environ={})
    with pytest.raises(UsageError, match="needs --cluster-reset-restore-path"):
        server_config(["--cluster-reset"], environ={})
    with pytest.raises(UsageError, match=">= 1"):
        server_config(["--snapshot-retention", "0"], environ={})
