"""asyncio helpers both roles share (stdlib only at import): the event loop they run on,
stopping a long-running task for sure, and waiting for an Event with a timeout without Python
3.11's asyncio.wait_for, which can swallow a cancellation that arrives just as its inner
future completes (fixed in 3.12): a loop woken at that moment then never stops."""

from __future__ import annotations

import asyncio

__all__ = ["use_uvloop", "cancel_and_wait", "wait_event"]


def use_uvloop() -> None:
    """Run the next asyncio.run on uvloop (less CPU a message than asyncio's own loop), as
    `k3py server` and `k3py agent` both do; asyncio's loop where uvloop does not import."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional on exotic platforms
        return
    uvloop.install()


async def cancel_and_wait(task: asyncio.Task | None, retry_every: float = 0.5) -> None:
    """Cancel `task` and wait until it has ended. Python 3.11's asyncio.wait_for can swallow a
    cancellation that arrives just as its inner future completes (fixed in 3.12), so a loop
    built on it may miss one cancel() and go on: cancel again until the task is done."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=retry_every)
    if not task.cancelled():
        task.exception()  # retrieved: an error while stopping is not worth a warning


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set, at most `timeout` seconds; True if it is set. A cancel is
    never lost (asyncio.timeout runs the wait in the calling task; wait_for wraps it in
    another and may return its result instead of raising the cancel)."""
    if not event.is_set():
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await event.wait()
        except TimeoutError:
            pass
    return event.is_set()
