"""Revision rules shared by the log-structured drivers: range bounds, revision checks, upkeep.

Used by sqlite.py (and a later postgres.py): `check_read_revision` turns a requested revision
into CompactedError / FutureRevisionError; `Maintenance` runs periodic compaction + checkpoints."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from k3py.aio import cancel_and_wait
from k3py.server.store.backend import CompactedError, FutureRevisionError, StorageFullError

__all__ = ["prefix_end", "check_read_revision", "Maintenance"]

log = logging.getLogger(__name__)

_MAX_CHAR = 0x10FFFF


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix` (None: no bound).

    Keys compare as UTF-8 bytes in SQLite (BINARY collation), which orders like code points."""
    p = prefix.rstrip(chr(_MAX_CHAR))
    if not p:
        return None
    return p[:-1] + chr(ord(p[-1]) + 1)


def check_read_revision(revision: int, current: int, compact: int) -> None:
    """Raise if the state at `revision` (0 = now) cannot be served from the log."""
    if revision <= 0:
        return
    if revision > current:
        raise FutureRevisionError(revision, current)
    if revision < compact:
        raise CompactedError(revision, compact)


class Maintenance:
    """Two periodic tasks on the event loop: compact to (current - min_retain); checkpoint.

    Both only enqueue work for the driver's writer, so neither blocks the loop. A failure is
    logged and retried on the next tick; the store keeps serving."""

    def __init__(self, *, current_revision: Callable[[], int],
                 compact_revision: Callable[[], int],
                 compact: Callable[[int], Awaitable[int]],
                 checkpoint: Callable[[], Awaitable[object]],
                 compact_interval: float, compact_min_retain: int,
                 checkpoint_interval: float) -> None:
        self._current = current_revision
        self._compacted = compact_revision
        self._compact = compact
        self._checkpoint = checkpoint
        self._compact_interval = compact_interval
        self._min_retain = compact_min_retain
        self._checkpoint_interval = checkpoint_interval
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self._compact_interval > 0:
            self._tasks.append(asyncio.create_task(self._every(
                self._compact_interval, self.compact_once), name="store-compact"))
        if self._checkpoint_interval > 0:
            self._tasks.append(asyncio.create_task(self._every(
                self._checkpoint_interval, self._checkpoint), name="store-checkpoint"))

    async def stop(self) -> None:
        for t in self._tasks:
            await cancel_and_wait(t)
        self._tasks.clear()

    async def compact_once(self) -> int:
        target = self._current() - self._min_retain
        if target > self._compacted():
            return await self._compact(target)
        return self._compacted()

    @staticmethod
    async def _every(interval: float, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except StorageFullError as e:  # the writer logged it when the disk filled up
                log.warning("store maintenance skipped: %s", e)
            except Exception:
                log.exception("store maintenance failed; retrying in %.0fs", interval)
