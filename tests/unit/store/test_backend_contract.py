"""The Backend contract, written against the protocol only: any driver must pass it.

Uses the `store` / `store_factory` fixtures of conftest.py (one param per driver); covers CRUD,
CAS, pagination, reads at old revisions, watch replay + live without gaps, compaction, restart."""

from __future__ import annotations

import asyncio
import random

import pytest

from k3py.server.store.backend import (
    Backend,
    CompactedError,
    Event,
    FutureRevisionError,
    KeyExistsError,
    WatchResult,
)

pytestmark = pytest.mark.unit

P = "/registry/configmaps/"


async def collect(w: WatchResult, until: int, timeout: float = 5.0) -> list[Event]:
    """Events of `w` until one with mod_revision >= until (deadline: timeout seconds)."""
    out: list[Event] = []

    async def run() -> None:
        async for batch in w.events():
            out.extend(batch)
            if out and out[-1].kv.mod_revision >= until:
                return

    await asyncio.wait_for(run(), timeout)
    return out


# ---------------------------------------------------------------- create / get / update / delete

async def test_create_then_get(store: Backend):
    rev0 = await store.current_revision()
    assert rev0 >= 1  # revision 0 means "now" in the API, so a store never reports it
    rev = await store.create(P + "a", b'{"v":1}')
    assert rev > rev0
    cur, kv = await store.get(P + "a")
    assert cur >= rev
    assert kv is not None and kv.value == b'{"v":1}'
    assert kv.mod_revision == kv.create_revision == rev
    assert await store.current_revision() == rev
    assert (await store.get(P + "missing"))[1] is None


async def test_create_existing_key_fails(store: Backend):
    await store.create(P + "a", b"1")
    with pytest.raises(KeyExistsError) as e:
        await store.create(P + "a", b"2")
    assert e.value.key == P + "a"
    assert (await store.get(P + "a"))[1].value == b"1"


async def test_update_is_compare_and_swap(store: Backend):
    rev = await store.create(P + "a", b"1")
    new_rev, kv, ok = await store.update(P + "a", b"2", rev)
    assert ok and kv is not None
    assert new_rev == kv.mod_revision > rev and kv.create_revision == rev and kv.value == b"2"
    cur, live, ok = await store.update(P + "a", b"3", rev)  # stale revision
    assert not ok and live == kv and cur >= new_rev
    assert (await store.get(P + "a"))[1] == kv
    _, none, ok = await store.update(P + "missing", b"x", 5)
    assert not ok and none is None
    # revision 0 is no wildcard for an update (only a delete may be unconditional)
    _, live, ok = await store.update(P + "a", b"4", 0)
    assert not ok and live == kv and (await store.get(P + "a"))[1] == kv


async def test_concurrent_cas_only_one_wins(store: Backend):
    rev = await store.create(P + "a", b"0")
    results = await asyncio.gather(*[store.update(P + "a", b"%d" % i, rev) for i in range(20)])
    assert sum(ok for _, _, ok in results) == 1


async def test_delete(store: Backend):
    rev = await store.create(P + "a", b"1")
    cur, live, ok = await store.delete(P + "a", rev + 100)  # stale: refused
    assert not ok and live is not None and live.mod_revision == rev
    drev, dkv, ok = await store.delete(P + "a", rev)
    assert ok and drev > rev and dkv is not None and dkv.value == b"1"
    assert (await store.get(P + "a"))[1] is None
    _, none, ok = await store.delete(P + "a")
    assert not ok and none is None
    # the key can be created again, as a new object
    rev2 = await store.create(P + "a", b"2")
    kv = (await store.get(P + "a"))[1]
    assert kv.create_revision == rev2 > drev


async def test_unconditional_delete(store: Backend):
    await store.create(P + "a", b"1")
    _, _, ok = await store.delete(P + "a")
    assert ok


async def test_batch_with_mixed_outcomes(store: Backend):
    """Ops that land in one group commit succeed or fail independently."""
    await store.create(P + "dup", b"x")
    results = await asyncio.gather(
        store.create(P + "n1", b"1"), store.create(P + "dup", b"2"),
        store.create(P + "n2", b"3"), return_exceptions=True)
    assert isinstance(results[1], KeyExistsError)
    assert isinstance(results[0], int) and isinstance(results[2], int)
    assert (await store.get(P + "n2"))[1].value == b"3"


# ---------------------------------------------------------------- list / count

async def test_list_prefix_order_and_pagination(store: Backend):
    names = [f"k{i:03d}" for i in range(25)]
    random.Random(1).shuffle(names)
    for n in names:
        await store.create(P + "ns/" + n, n.encode())
    await store.create("/registry/configmaps0", b"outside")  # shares the prefix bytes minus "/"
    await store.create("/registry/configmapsX/y", b"outside")
    rev = await store.delete(P + "ns/k007")
    assert rev[2]

    cur, kvs = await store.list(P)
    assert [kv.key for kv in kvs] == [P + f"ns/k{i:03d}" for i in range(25) if i != 7]

    pages, start, at = [], "", 0
    while True:
        at_rev, page = await store.list(P, start_key=start, limit=10, revision=at)
        at = at or at_rev
        assert at_rev == at
        pages.append([kv.key for kv in page])
        if len(page) < 10:
            break
        start = page[-1].key + "\x00"
    assert sum(pages, []) == [kv.key for kv in kvs]
    assert [len(p) for p in pages] == [10, 10, 4]
    assert await store.count(P) == (cur, 24)


async def test_list_pages_stay_consistent_while_writing(store: Backend):
    for i in range(10):
        await store.create(P + f"k{i}", b"old")
    at, first = await store.list(P, limit=5)
    for i in range(10):
        kv = (await store.get(P + f"k{i}"))[1]
        await store.update(P + f"k{i}", b"new", kv.mod_revision)
    await store.create(P + "k5a", b"new")
    _, rest = await store.list(P, start_key=first[-1].key + "\x00", revision=at)
    assert [kv.value for kv in first + rest] == [b"old"] * 10
    assert len(rest) == 5


async def test_get_and_list_at_old_revision(store: Backend):
    r1 = await store.create(P + "a", b"a1")
    r2 = await store.create(P + "b", b"b1")
    r3, _, _ = await store.update(P + "a", b"a2", r1)
    r4, _, _ = await store.delete(P + "b", r2)
    assert (await store.get(P + "a", r1))[1].value == b"a1"
    assert (await store.get(P + "a", r3))[1].value == b"a2"
    assert (await store.get(P + "b", r3))[1].value == b"b1"
    assert (await store.get(P + "b", r4))[1] is None
    at, kvs = await store.list(P, revision=r2)
    assert at == r2 and [(kv.key, kv.value) for kv in kvs] == [(P + "a", b"a1"), (P + "b", b"b1")]
    _, kvs = await store.list(P, revision=r4)
    assert [(kv.key, kv.value) for kv in kvs] == [(P + "a", b"a2")]
    with pytest.raises(FutureRevisionError):
        await store.list(P, revision=r4 + 10)
    with pytest.raises(FutureRevisionError):
        await store.get(P + "a", r4 + 10)


# ---------------------------------------------------------------- watch

async def test_watch_replays_then_follows(store: Backend):
    r1 = await store.create(P + "a", b"1")
    r2, _, _ = await store.update(P + "a", b"2", r1)
    await store.create("/registry/secrets/s", b"other prefix")
    w = await store.watch(P, r1 - 1)
    r3, _, _ = await store.delete(P + "a", r2)
    events = await collect(w, r3)
    w.cancel()
    assert [(e.kv.mod_revision, e.create, e.delete) for e in events] == [
        (r1, True, False), (r2, False, False), (r3, False, True)]
    assert events[1].prev_kv is not None and events[1].prev_kv.value == b"1"
    assert events[2].kv.value == b"2"  # a tombstone carries the last value
    assert events[2].prev_kv is not None and events[2].prev_kv.mod_revision == r2


async def test_watch_from_now_sees_only_new_events(store: Backend):
    await store.create(P + "old", b"1")
    w = await store.watch(P, 0)
    r = await store.create(P + "new", b"2")
    events = await collect(w, r)
    w.cancel()
    assert [e.kv.key for e in events] == [P + "new"]


async def test_watch_cancel_ends_iteration(store: Backend):
    w = await store.watch(P, 0)

    async def drain() -> int:
        n = 0
        async for batch in w.events():
            n += len(batch)
        return n

    task = asyncio.create_task(drain())
    await asyncio.sleep(0)
    w.cancel()
    assert await asyncio.wait_for(task, 2) == 0


async def test_watch_has_no_gap_or_duplicate_under_concurrent_writes(store: Backend):
    keys = [P + f"k{i}" for i in range(20)]
    for k in keys:
        await store.create(k, b"0")
    stop = asyncio.Event()

    async def churn(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            k = rng.choice(keys)
            _, kv = await store.get(k)
            if kv is not None:
                await store.update(k, b"%d" % rng.randrange(1000), kv.mod_revision)

    writers = [asyncio.create_task(churn(s)) for s in range(8)]
    watches = []
    for _ in range(10):  # opened while commits are in flight, some replaying a little history
        start = max(1, await store.current_revision() - random.randrange(0, 5))
        watches.append((start, await store.watch(P, start)))
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*writers)
    # the last write's revision (PostgreSQL may have used later revision numbers for writes
    # that lost a race: kine's placeholder rows, which no watch reports)
    end = max(kv.mod_revision for kv in (await store.list(P))[1])
    full = await store.watch(P, 1)
    reference = [e.kv.mod_revision for e in await collect(full, end)]
    full.cancel()
    assert reference == sorted(set(reference))
    for start, w in watches:
        got = [e.kv.mod_revision for e in await collect(w, end)]
        w.cancel()
        assert got == [r for r in reference if r > start], f"watch from {start}"


async def test_watch_prefix_filter(store: Backend):
    w = await store.watch("/registry/secrets/", 0)
    await store.create(P + "a", b"1")
    r = await store.create("/registry/secrets/s", b"2")
    events = await collect(w, r)
    w.cancel()
    assert [e.kv.key for e in events] == ["/registry/secrets/s"]


async def test_many_watchers_each_get_every_event(store: Backend):
    watches = [await store.watch(P, 0) for _ in range(500)]
    revs = [await store.create(P + f"k{i}", b"x") for i in range(3)]
    results = await asyncio.gather(*[collect(w, revs[-1]) for w in watches])
    for w in watches:
        w.cancel()
    assert all([e.kv.mod_revision for e in evs] == revs for evs in results)


# ---------------------------------------------------------------- compaction

async def _history(store: Backend) -> tuple[int, dict[str, bytes]]:
    rev_a = await store.create(P + "a", b"a0")
    for i in range(1, 6):
        rev_a, _, _ = await store.update(P + "a", b"a%d" % i, rev_a)
    rb = await store.create(P + "b", b"b0")
    await store.delete(P + "b", rb)
    await store.create(P + "c", b"c0")
    mid = await store.current_revision()
    rev_a, _, _ = await store.update(P + "a", b"a6", rev_a)
    return mid, {P + "a": b"a6", P + "c": b"c0"}


async def test_compaction_keeps_live_state_and_refuses_old_revisions(store: Backend):
    mid, live = await _history(store)
    _, state_at_mid = await store.list(P, revision=mid)
    assert await store.compact(mid) == mid
    assert await store.compact_revision() == mid
    _, kvs = await store.list(P)
    assert {kv.key: kv.value for kv in kvs} == live
    _, again = await store.list(P, revision=mid)  # the state at the compact revision survives
    assert again == state_at_mid
    with pytest.raises(CompactedError) as e:
        await store.list(P, revision=mid - 1)
    assert e.value.compact_revision == mid
    with pytest.raises(CompactedError):
        await store.get(P + "a", mid - 1)
    with pytest.raises(CompactedError):
        await store.watch(P, mid - 1)
    w = await store.watch(P, mid)
    events = await collect(w, await store.current_revision())
    w.cancel()
    assert [e.kv.value for e in events] == [b"a6"]
    assert events[0].prev_kv is not None and events[0].prev_kv.value == b"a5"
    assert await store.compact(mid - 3) == mid  # never moves back


async def test_compaction_beyond_current_is_clamped(store: Backend):
    await store.create(P + "a", b"1")
    cur = await store.current_revision()
    assert await store.compact(cur + 1000) == cur
    assert (await store.get(P + "a"))[1].value == b"1"


async def test_periodic_compaction(store_factory):
    store = await store_factory.open(compact_interval=0.05, compact_min_retain=10)
    rev = await store.create(P + "a", b"0")
    for i in range(50):
        rev, _, _ = await store.update(P + "a", b"%d" % i, rev)
    deadline = asyncio.get_running_loop().time() + 5
    while await store.compact_revision() < rev - 10:
        assert asyncio.get_running_loop().time() < deadline, "compaction did not run"
        await asyncio.sleep(0.02)
    assert (await store.get(P + "a"))[1].value == b"49"


# ---------------------------------------------------------------- restart

async def test_restart_keeps_data_revision_and_compaction(store_factory):
    store = await store_factory.open()
    rev = await store.create(P + "a", b"1")
    r2 = await store.create(P + "b", b"2")
    last, _, _ = await store.delete(P + "b", r2)  # the newest row is a tombstone...
    await store.compact(last)  # ...which compaction removes
    await store.close()

    store = await store_factory.open()
    assert await store.current_revision() == last
    assert await store.compact_revision() == last
    assert (await store.get(P + "a"))[1].mod_revision == rev
    assert (await store.get(P + "b"))[1] is None
    assert await store.create(P + "c", b"3") == last + 1  # revisions are never reused
