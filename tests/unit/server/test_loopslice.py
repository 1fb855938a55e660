"""k3py.server.loopslice: a loop that drains its backlog through LoopSlice.checkpoint leaves
the event loop to other work between slices (a callback queued meanwhile runs before the
backlog is drained), drains all of it, and does not pause within a slice."""

from __future__ import annotations

import asyncio
import time

import pytest

from k3py.server.loopslice import SLICE, LoopSlice

pytestmark = pytest.mark.unit

ITEM = 0.001  # seconds of CPU one item of the backlog below takes


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def _drain(items: int, log: list[int]) -> None:
    slice_ = LoopSlice()
    for i in range(items):
        await slice_.checkpoint()
        _busy(ITEM)
        log.append(i)


async def test_other_work_runs_between_slices():
    """A backlog of 200 items (0.2 s) does not hold a callback queued meanwhile behind it:
    it runs after at most about a slice of items (fewer if the machine is slow), and the
    whole backlog is drained."""
    log: list[int] = []
    backlog = asyncio.create_task(_drain(200, log))
    await asyncio.sleep(0)  # the backlog has started
    ran_after: list[int] = []
    asyncio.get_running_loop().call_soon(lambda: ran_after.append(len(log)))
    await backlog
    assert len(log) == 200
    assert ran_after and ran_after[0] <= SLICE / ITEM + 2


async def test_no_pause_within_a_slice():
    """The first item, and those after it within the slice, do not give up the loop."""
    steps = 0

    async def count() -> None:
        nonlocal steps
        while True:
            steps += 1
            await asyncio.sleep(0)
    counter = asyncio.create_task(count())
    await asyncio.sleep(0)
    before = steps
    slice_ = LoopSlice()
    await slice_.checkpoint()
    await slice_.checkpoint()
    assert steps == before  # no other task ran: neither call gave up the loop
    counter.cancel()
