"""A part of the agent rebuilt from metamanager's objects a moment after they change: one
task that waits for a change of the kinds it follows, lets a burst settle, and runs the
rebuild; a failed rebuild is logged and the next change tries again.

The ingress proxy's routes use it (agent/ingress/manager.py); the rebuild reads what it needs
from metamanager itself, so it works the same offline and after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from k3py.agent.metamanager import MetaManager

__all__ = ["Rebuilder"]


class Rebuilder:
    """Runs `rebuild()` once at start and after every change of `kinds` in `meta` (a full
    sync counts), at most once per `debounce` seconds."""

    def __init__(self, meta: MetaManager, kinds: frozenset[str],
                 rebuild: Callable[[], Awaitable[None]], *, debounce: float,
                 log: logging.Logger, what: str) -> None:
        self.meta = meta
        self.kinds = kinds | {"sync"}
        self.rebuild = rebuild
        self.debounce = debounce
        self.log = log
        self.what = what  # for the log line of a failed rebuild
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self.meta.listeners.append(self._on_change)
        self._task = asyncio.create_task(self._loop(), name=self.what)
        self._wake.set()

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.meta.listeners.remove(self._on_change)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_change(self, what: str) -> None:
        if what in self.kinds:
            self._wake.set()

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.debounce)
            self._wake.clear()
            try:
                await self.rebuild()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the next change tries again
                self.log.exception("updating the %s failed", self.what)
