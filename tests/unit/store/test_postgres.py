"""What only the PostgreSQL driver has: several servers on one database (shared writes, watches,
conditional updates), events that a lost NOTIFY or an id that never commits cannot lose, an
outage that fails calls with StoreUnavailableError and heals when the database returns, and TLS
with a CA and a client certificate.

Runs on the session's throwaway cluster (conftest.py `pg_cluster`); the outage and TLS tests
start their own."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from k3py import pki
from k3py.server.store.backend import InvalidKeyError, StoreError, StoreUnavailableError
from k3py.server.store.postgres import PostgresBackend
from tests.pg import PASSWORD, SKIP_REASON, USER, PostgresCluster, pg_bindir
from tests.unit.store.test_backend_contract import collect

pytestmark = pytest.mark.unit

P = "/registry/configmaps/"
_names = itertools.count()


@pytest.fixture
async def two(pg_cluster):
    """Two backends (two servers' stores) on one fresh database, and the database's name."""
    db = f"shared{next(_names)}"
    pair = [PostgresBackend(pg_cluster.create_db(db), compact_interval=0)]
    pair.append(PostgresBackend(pg_cluster.dsn(db), compact_interval=0))
    for b in pair:
        await b.start()
    try:
        yield (*pair, db)
    finally:
        for b in pair:
            await b.close()


async def test_a_write_on_one_server_is_read_and_watched_on_the_other(two):
    a, b, _ = two
    w = await b.watch(P, 0)
    rev = await a.create(P + "x", b"1")
    events = await collect(w, rev)
    w.cancel()
    assert [(e.kv.key, e.kv.value) for e in events] == [(P + "x", b"1")]
    _, kv = await b.get(P + "x")
    assert kv is not None and kv.mod_revision == rev


async def test_conditional_updates_from_two_servers_have_one_winner(two):
    a, b, _ = two
    rev = await a.create(P + "x", b"0")
    await b.get(P + "x", rev)  # B has published the create
    results = await asyncio.gather(*[s.update(P + "x", b"%d" % i, rev)
                                     for i, s in enumerate([a, b] * 5)])
    assert sum(ok for _, _, ok in results) == 1
    winner = next(kv for _, kv, ok in results if ok)
    assert (await a.get(P + "x"))[1] == (await b.get(P + "x"))[1] == winner
    assert await a.create(P + "y", b"1") != await b.create(P + "z", b"2")


async def test_a_server_closes_while_the_other_keeps_writing(pg_cluster):
    """Each write of one server wakes the other's poller (NOTIFY): closing that other server
    meanwhile ends at once. (Its poller used asyncio.wait_for, which on Python 3.11 can swallow
    the cancel that arrives as the wake-up does: close() then hung, once in a CI run.)"""
    db = f"closing{next(_names)}"
    writer = PostgresBackend(pg_cluster.create_db(db), compact_interval=0)
    await writer.start()
    stop = asyncio.Event()

    async def write() -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            await writer.create(P + f"w{i}", b"1")

    task = asyncio.create_task(write())
    try:
        for _ in range(5):
            closing = PostgresBackend(pg_cluster.dsn(db), compact_interval=0)
            await closing.start()
            await asyncio.sleep(0.2)  # a few writes' NOTIFYs reach its poller
            async with asyncio.timeout(20):
                await closing.close()
    finally:
        stop.set()
        await task
        await writer.close()


async def test_two_servers_writing_the_same_keys_in_opposite_orders(two):
    """Each server sends its concurrent writes as one transaction (sorted by key, so two
    batches cannot wait for each other in a cycle; this test does not force that overlap):
    every round ends without an error, with one winner per key."""
    a, b, _ = two
    revs = {k: await a.create(P + k, b"0") for k in ("x", "y")}
    await b.get(P + "y", max(revs.values()))
    for i in range(10):
        results = await asyncio.gather(
            a.update(P + "x", b"a%d" % i, revs["x"]), a.update(P + "y", b"a%d" % i, revs["y"]),
            b.update(P + "y", b"b%d" % i, revs["y"]), b.update(P + "x", b"b%d" % i, revs["x"]))
        for key, outcomes in (("x", results[0::3]), ("y", results[1:3])):
            assert sum(ok for _, _, ok in outcomes) == 1, (i, key, outcomes)
            revs[key] = next(kv.mod_revision for _, kv, ok in outcomes if ok)


async def test_a_row_written_without_notify_still_reaches_watchers(two, pg_cluster):
    """A NOTIFY lost with a connection: the periodic poll finds the row anyway."""
    a, _, db = two
    w = await a.watch(P, 0)
    rev = int(pg_cluster.psql(
        "INSERT INTO kine SELECT n, '/registry/configmaps/quiet', 1, 0, n, 0, '\\x31' "
        "FROM nextval('kine_id_seq') AS n RETURNING id", db).split()[0])
    events = await collect(w, rev)
    w.cancel()
    assert [(e.kv.key, e.kv.mod_revision, e.create) for e in events] == [
        (P + "quiet", rev, True)]


async def test_an_id_that_never_commits_is_filled_not_waited_for(two, pg_cluster):
    """A writer that died between nextval and its insert leaves a hole in the ids: the poller
    waits for it briefly, then fills it, and later events flow; the fill is no event. The
    writing server holds its own write back behind the hole too (revision order, no gap)."""
    a, b, db = two
    watches = [await a.watch(P, 0), await b.watch(P, 0)]
    hole = int(pg_cluster.psql("SELECT nextval('kine_id_seq')", db).split()[0])
    rev = await a.create(P + "after-hole", b"1")
    assert rev == hole + 1
    assert await a.current_revision() >= rev  # published when the create returned
    for w in watches:
        events = await collect(w, rev)
        w.cancel()
        assert [(e.kv.key, e.kv.mod_revision) for e in events] == [(P + "after-hole", rev)]
    assert await b.current_revision() >= rev


def refuse_key(pg_cluster, db: str, key: str) -> None:
    """Make the database fail any insert of `key` (a write that rolls back its batch)."""
    pg_cluster.psql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.name = '{key}' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$; "
        "CREATE TRIGGER refuse BEFORE INSERT ON kine FOR EACH ROW EXECUTE FUNCTION refuse()",
        db)


async def test_the_ids_of_a_rolled_back_batch_are_filled_together(two, pg_cluster):
    """A batch that rolls back leaves one hole per write: the poller fills the whole run at
    once after the first has waited, so the next write's event is not held back behind a
    fill per hole (51 holes would take over 25 s one by one)."""
    a, b, db = two
    refuse_key(pg_cluster, db, P + "z-bad")  # last in its batch (sorted by key)
    w = await b.watch(P, 0)
    writes = [a.create(P + "z-bad", b"1")] + [a.create(P + f"k{i}", b"1") for i in range(50)]
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert isinstance(results[0], StoreError) and "refused" in str(results[0])
    rev = await a.create(P + "after-batch", b"1")
    events = await collect(w, rev, timeout=5)
    w.cancel()
    assert events[-1].kv.key == P + "after-batch"


async def test_a_bad_write_fails_alone_not_its_batch(two, pg_cluster):
    """Keys PostgreSQL cannot hold are refused before they join a batch; a write the
    database refuses inside a batch fails alone: the batch is sent again one by one."""
    a, _, db = two
    for key in (P + "nul\x00", P + "x" * 2100):
        with pytest.raises(InvalidKeyError):
            await a.create(key, b"1")
    refuse_key(pg_cluster, db, P + "z-bad")
    rev = await a.create(P + "u", b"0")
    results = await asyncio.gather(
        a.create(P + "z-bad", b"1"), a.update(P + "u", b"1", rev),
        *[a.create(P + f"ok{i}", b"1") for i in range(5)], return_exceptions=True)
    assert isinstance(results[0], StoreError) and "refused" in str(results[0])
    assert results[1][2] and all(isinstance(r, int) for r in results[2:]), results


async def test_a_batch_writes_in_one_transaction_without_subtransactions(two, pg_cluster):
    """A batch's rows share their transaction id: no write opens a subtransaction (more than
    64 in a transaction overflow PostgreSQL's subxid cache and slow every snapshot)."""
    a, _, db = two
    await asyncio.gather(*[a.create(P + f"b{i}", b"1") for i in range(70)])
    xids = pg_cluster.psql(f"SELECT COUNT(DISTINCT xmin::text) FROM kine WHERE name LIKE '{P}b%'",
                           db)
    assert xids.strip() == "1"


async def test_a_write_cancelled_while_queued_is_not_sent(two):
    a, _, _ = two
    writer = asyncio.create_task(a.create(P + "cancelled", b"1"))
    await asyncio.sleep(0)  # the write is queued; its batch is not formed yet
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    await a.create(P + "after", b"1")  # sent after the cancelled one would have been
    assert (await a.get(P + "cancelled"))[1] is None


async def test_a_batch_whose_answer_cannot_be_used_fails_its_writers(two, pg_cluster):
    """A batch answered with rows the server cannot match to its writes (here: a database
    whose kine_write_batch returns none) fails its writers instead of leaving them waiting."""
    a, _, db = two
    pg_cluster.psql(
        "CREATE OR REPLACE FUNCTION kine_write_batch(p_ops SMALLINT[], p_names TEXT[], "
        "p_revisions BIGINT[], p_values BYTEA[]) RETURNS TABLE (rev BIGINT, cur_id BIGINT, "
        "cur_deleted SMALLINT, cur_create_revision BIGINT, cur_value BYTEA) "
        "LANGUAGE plpgsql AS $$ BEGIN RETURN; END $$", db)
    with pytest.raises(StoreError, match="outcome is unknown"):
        await asyncio.wait_for(a.create(P + "x", b"1"), 10)


async def test_the_writing_server_publishes_the_events_other_servers_read_back(two):
    """A server publishes its own writes without reading them back; its events are those the
    other server's poller reads from the database (prev_kv included), in the same order."""
    a, b, _ = two
    watches = [await a.watch(P, 0), await b.watch(P, 0)]
    rev = await a.create(P + "x", b"1")
    rev, _, ok = await a.update(P + "x", b"2", rev)
    assert ok
    writes = [a.update(P + "x", b"3", rev), a.create(P + "y", b"1"), a.create(P + "z", b"1")]
    await asyncio.gather(*writes)
    rev, _, ok = await a.delete(P + "x")
    assert ok
    seen = [await collect(w, rev) for w in watches]
    for w in watches:
        w.cancel()
    assert seen[0] == seen[1]
    assert [e.kv.mod_revision for e in seen[0]] == sorted(e.kv.mod_revision for e in seen[0])
    last = seen[0][-1]
    assert last.delete and last.kv.value == b"3" and last.prev_kv.value == b"3"
    assert seen[0][1].prev_kv.value == b"1" and seen[0][1].kv.value == b"2"


@pytest.mark.skipif(pg_bindir() is None, reason=SKIP_REASON)
async def test_outage_fails_calls_then_heals_and_watches_resume():
    cluster = PostgresCluster(fsync=False)
    try:
        cluster.start()
        store = PostgresBackend(cluster.create_db("outage"), compact_interval=0)
        await store.start()
        try:
            w = await store.watch(P, 0)
            await store.create(P + "before", b"1")
            cluster.stop()
            with pytest.raises(StoreUnavailableError, match="datastore .* unavailable"):
                await store.get(P + "before")
            with pytest.raises(StoreUnavailableError):
                await store.create(P + "during", b"1")
            cluster.start()
            deadline = asyncio.get_running_loop().time() + 20
            while True:
                try:
                    rev = await store.create(P + "after", b"2")
                    break
                except StoreUnavailableError:
                    assert asyncio.get_running_loop().time() < deadline, "no recovery"
                    await asyncio.sleep(0.1)
            events = await collect(w, rev, timeout=10)
            w.cancel()
            assert [e.kv.key for e in events] == [P + "before", P + "after"]
        finally:
            await store.close()
    finally:
        cluster.destroy()


@pytest.mark.skipif(pg_bindir() is None, reason=SKIP_REASON)
async def test_tls_with_a_ca_and_a_client_certificate(tmp_path):
    """--datastore-cafile/certfile/keyfile: the server is verified (verify-full by default
    with a CA) and presents the client certificate the database requires."""
    bundle = pki.ensure_pki(str(tmp_path / "tls"), sans=["localhost"], ips=["127.0.0.1"])
    cert, key = bundle.issue_client_cert(USER)
    (tmp_path / "client.crt").write_bytes(cert)
    (tmp_path / "client.key").write_bytes(key)
    (tmp_path / "client.key").chmod(0o600)
    cluster = PostgresCluster(fsync=False, tls=(
        bundle.serving_cert_path, bundle.serving_key_path, bundle.client_ca_path))
    try:
        cluster.start()
        cluster.create_db("tls")
        dsn = f"postgres://{USER}:{PASSWORD}@127.0.0.1:{cluster.port}/tls"
        store = PostgresBackend(dsn, cafile=bundle.ca_cert_path,
                                certfile=str(tmp_path / "client.crt"),
                                keyfile=str(tmp_path / "client.key"), compact_interval=0)
        await store.start()
        try:
            rev = await store.create(P + "over-tls", b"1")
            assert (await store.get(P + "over-tls"))[1].mod_revision == rev
        finally:
            await store.close()
        without_cert = PostgresBackend(dsn, cafile=bundle.ca_cert_path)
        with pytest.raises(StoreError, match="cannot use the datastore .*:\\*\\*\\*@"):
            await without_cert.start()
    finally:
        cluster.destroy()
