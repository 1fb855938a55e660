"""Watch fan-out on its own: prefix filtering, a lagging watcher is closed, replay/live dedup,
and the fan-out latency of one event to 500 watchers (the figure the API watch relies on)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from k3py.server.store.backend import Event, KeyValue
from k3py.server.store.broadcaster import Broadcaster, WatchStream

pytestmark = pytest.mark.unit


def ev(key: str, rev: int) -> Event:
    return Event(create=False, delete=False, kv=KeyValue(key, 1, rev, b"{}"))


async def test_publish_filters_by_prefix():
    b = Broadcaster()
    pods, everything = b.subscribe("/registry/pods/"), b.subscribe("")
    b.publish([ev("/registry/pods/a", 2), ev("/registry/secrets/s", 3)])
    assert [e.kv.mod_revision for e in await pods.get()] == [2]
    assert [e.kv.mod_revision for e in await everything.get()] == [2, 3]


async def test_lagging_watcher_is_closed_and_others_keep_going():
    b = Broadcaster(max_pending=5)
    slow, fast = b.subscribe(""), b.subscribe("")
    for rev in range(2, 9):
        b.publish([ev("/k", rev)])
        assert await fast.get() is not None
    assert slow.closed and slow.overflowed
    assert await slow.get() is None
    assert b.watcher_count == 1


async def test_stream_drops_live_events_already_replayed():
    b = Broadcaster()
    sub = b.subscribe("")
    b.publish([ev("/k", 5), ev("/k", 6)])  # committed while the replay was being read
    b.publish([ev("/k", 7)])
    stream = WatchStream(b, sub, [ev("/k", 4), ev("/k", 5), ev("/k", 6)], 6, 6, 0)
    got: list[int] = []
    async with contextlib.aclosing(stream.events()) as batches:
        async for batch in batches:
            got += [e.kv.mod_revision for e in batch]
            if got[-1] == 7:
                break
    assert got == [4, 5, 6, 7]
    assert b.watcher_count == 0  # closing the iteration cancels the watch


async def test_fan_out_to_500_watchers_delivers_every_event_in_order():
    """(How fast is bench/api.py's fan-out figure, not a test's.)"""
    b = Broadcaster()
    streams = [WatchStream(b, b.subscribe("/registry/pods/"), [], 0, 0, 0) for _ in range(500)]

    async def consume(s: WatchStream, n: int) -> list[int]:
        seen: list[int] = []
        async for batch in s.events():
            seen += [e.kv.mod_revision for e in batch]
            if len(seen) == n:
                return seen
        return seen

    tasks = [asyncio.create_task(consume(s, 20)) for s in streams]
    await asyncio.sleep(0)
    for rev in range(2, 22):
        b.publish([ev("/registry/pods/ns/p", rev)])
        await asyncio.sleep(0)
    results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert all(seen == list(range(2, 22)) for seen in results)
