"""What only the SQLite driver promises: WAL + synchronous=FULL, compaction really deletes rows,
checkpoints bound the WAL and shrink the file, both replay query plans, and a clean close."""

from __future__ import annotations

import asyncio
import os

import apsw
import pytest

from k3py.server.store import sqlite
from k3py.server.store.backend import KeyValue, StorageFullError, StoreError
from k3py.server.store.sqlite import SQLiteBackend

pytestmark = pytest.mark.unit

P = "/registry/configmaps/"


@pytest.fixture
async def db(tmp_path):
    store = SQLiteBackend(str(tmp_path / "state.db"), compact_interval=0, checkpoint_interval=0)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def peek(path: str, sql: str) -> list[tuple]:
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_file_is_wal_with_full_sync(db: SQLiteBackend):
    await db.create(P + "a", b"1")
    assert peek(db.path, "PRAGMA journal_mode") == [("wal",)]
    assert os.path.exists(db.path + "-wal")
    assert db._wconn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


async def test_compaction_deletes_superseded_rows_and_tombstones(db: SQLiteBackend):
    rev = await db.create(P + "a", b"0")
    for i in range(10):
        rev, _, _ = await db.update(P + "a", b"%d" % i, rev)
    rb = await db.create(P + "b", b"b")
    await db.delete(P + "b", rb)
    assert peek(db.path, "SELECT COUNT(*) FROM kine") == [(13,)]
    await db.compact(await db.current_revision())
    assert peek(db.path, "SELECT name, value FROM kine") == [(P + "a", b"9")]
    assert peek(db.path, "SELECT value FROM kine_meta WHERE key = 'compact_revision'") == [
        (await db.current_revision(),)]


async def test_checkpoint_truncates_wal_and_returns_free_pages(db: SQLiteBackend):
    big = b"x" * 4000
    revs = await asyncio.gather(*[db.create(P + f"k{i}", big) for i in range(3000)])
    for i, rev in enumerate(revs):  # tombstones keep the value, so the file doubles
        await db.delete(P + f"k{i}", rev)
    await db.checkpoint()
    size_full = os.path.getsize(db.path)
    await db.compact(await db.current_revision())
    for _ in range(10):  # each checkpoint moves a bounded number of pages
        busy, _, _ = await db.checkpoint()
        assert busy == 0
    assert os.path.getsize(db.path + "-wal") == 0
    assert os.path.getsize(db.path) < size_full / 4


async def test_replay_from_far_back_uses_the_name_index(db: SQLiteBackend, monkeypatch):
    monkeypatch.setattr(sqlite, "_REPLAY_BY_ID_MAX", -1)
    r1 = await db.create(P + "a", b"1")
    await db.create("/registry/secrets/s", b"x")
    r2, _, _ = await db.update(P + "a", b"2", r1)
    w = await db.watch(P, r1 - 1)
    batch = await asyncio.wait_for(anext(aiter(w.events())), 2)
    w.cancel()
    assert [e.kv.mod_revision for e in batch] == [r1, r2]


async def test_close_ends_watches_and_refuses_calls(tmp_path):
    store = SQLiteBackend(str(tmp_path / "state.db"), compact_interval=0, checkpoint_interval=0)
    await store.start()
    w = await store.watch(P, 0)

    async def drain() -> int:
        return sum([len(b) async for b in w.events()])

    task = asyncio.create_task(drain())
    await asyncio.sleep(0)
    await store.close()
    assert await asyncio.wait_for(task, 2) == 0
    with pytest.raises(StoreError):
        await store.create(P + "a", b"1")
    with pytest.raises(StoreError):
        await store.get(P + "a")
    await store.close()  # idempotent


async def test_full_disk_fails_the_batch_then_writes_resume(db: SQLiteBackend):
    """SQLITE_FULL (here: the file may not grow) rolls the batch back and fails each of its
    writes with StorageFullError naming the file; reads go on; writes work again, with no
    revision handed out twice, once there is room (the tmpfs version is an integration test)."""
    rev = await db.create(P + "a", b"1")
    pages = db._wconn.execute("PRAGMA page_count").fetchone()[0]
    db._wconn.execute(f"PRAGMA max_page_count={pages}")
    big = b"x" * 200_000
    results = await asyncio.gather(db.create(P + "b", big), db.update(P + "a", big, rev),
                                   return_exceptions=True)
    for r in results:
        assert isinstance(r, StorageFullError), r
        assert db.path in str(r) and "disk is full" in str(r)
    assert await db.current_revision() == rev
    _, kv = await db.get(P + "a")
    assert kv is not None and kv.value == b"1"
    db._wconn.execute("PRAGMA max_page_count=1073741823")
    assert await db.create(P + "b", big) == rev + 1
    assert peek(db.path, "PRAGMA integrity_check") == [("ok",)]


async def test_point_read_on_the_loop_sees_each_acknowledged_write(db: SQLiteBackend):
    """A get of a key now is answered on the event loop, from what the last batches
    committed (store/recent.py) or else from the loop's own connection (not a reader
    thread): either way it sees every write as soon as the write is acknowledged, a delete
    included, and the current revision with it."""
    rev = await db.create(P + "a", b"1")
    current, kv = await db.get(P + "a")
    assert (current, kv.value, kv.mod_revision) == (rev, b"1", rev)
    for i in range(20):
        rev, _, _ = await db.update(P + "a", b"%d" % i, rev)
        if i % 2:
            db._recent.clear()  # not kept: read on the loop's connection
        current, kv = await db.get(P + "a")
        assert (current, kv.value, kv.mod_revision) == (rev, b"%d" % i, rev)
    assert db._loop_conn is not None
    drev, _, _ = await db.delete(P + "a", rev)
    assert await db.get(P + "a") == (drev, None)
    db._recent.clear()
    assert await db.get(P + "a") == (drev, None)


async def test_a_closed_store_answers_no_point_read_not_even_of_a_kept_key(db: SQLiteBackend):
    rev = await db.create(P + "kept", b"1")
    assert await db.get(P + "kept") == (rev, KeyValue(P + "kept", rev, rev, b"1"))
    await db.close()
    with pytest.raises(StoreError, match="store is closed"):
        await db.get(P + "kept")
