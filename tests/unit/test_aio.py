"""k3py.aio: a loop waiting on an Event stops on the first cancel even when the cancel arrives
just as the Event is set (Python 3.11's asyncio.wait_for returned the result and swallowed
the cancel there: the PostgreSQL store's poller then never stopped and close() hung), and
cancel_and_wait ends a task that swallows cancels."""

from __future__ import annotations

import asyncio
import sys

import pytest

from k3py.aio import cancel_and_wait, wait_event

pytestmark = pytest.mark.unit


async def _event_loop(wait, event: asyncio.Event) -> None:
    while True:
        await wait(event)
        event.clear()


async def _cancel_as_the_event_is_set(wait) -> bool:
    """True if the loop stopped on one cancel given right after the Event was set."""
    event = asyncio.Event()
    task = asyncio.create_task(_event_loop(wait, event))
    await asyncio.sleep(0)
    event.set()
    await asyncio.sleep(0)  # the inner wait completes; the task has not resumed yet
    task.cancel()
    await asyncio.wait({task}, timeout=0.5)
    stopped = task.done()
    await cancel_and_wait(task)
    return stopped


async def test_a_cancel_as_the_event_is_set_is_not_lost():
    assert await _cancel_as_the_event_is_set(lambda e: wait_event(e, 10))


async def test_the_race_is_real_with_wait_for():
    """The same scene with asyncio.wait_for loses the cancel on 3.11 (fixed in 3.12)."""
    lost = not await _cancel_as_the_event_is_set(lambda e: asyncio.wait_for(e.wait(), 10))
    assert lost == (sys.version_info < (3, 12))


async def test_wait_event_answers_whether_the_event_is_set():
    event = asyncio.Event()
    assert not await wait_event(event, 0.01)
    assert not await wait_event(event, -1)
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 10)
    assert await wait_event(event, 0)
