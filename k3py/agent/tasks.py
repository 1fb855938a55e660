"""Stopping the agent's long-running tasks for sure."""

from __future__ import annotations

import asyncio

__all__ = ["cancel_and_wait"]


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
