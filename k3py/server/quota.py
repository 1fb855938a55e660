"""How many of a scarce thing each key (a user, or the whole server) holds at once, and a 429
Status for one more: the server's long-lived streams between servers are bounded with it.

Used for a user's MQTT tails through the other servers (dashboard/mqtt.py), a user's logs
through them (dashboard/logs.py), the streamed GETs one server opens to its peers
(edge/peerrelay.py) and the tails it serves them (edge/peertail.py). In memory, per
process; a count goes back down however its holder ends (an error, a cancellation), and a key
whose count is back at 0 is forgotten, so that the users who came and went leave nothing
behind."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Hashable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import TypeVar

from k3py.api import errors

__all__ = ["Quota", "WHOLE_SERVER"]

T = TypeVar("T")

WHOLE_SERVER = ""  # the key of a quota that counts for the whole server, not per user


class Quota:
    """At most `limit` held at once per key; `message` is the 429's, the same for every key
    (it says what to close)."""

    def __init__(self, limit: int, message: str) -> None:
        self.limit, self.message = limit, message
        self._held: dict[Hashable, int] = {}  # key -> held now (no entry: none)

    def held(self, key: Hashable = WHOLE_SERVER) -> int:
        return self._held.get(key, 0)

    def __len__(self) -> int:
        """The keys holding something now."""
        return len(self._held)

    @contextlib.contextmanager
    def hold(self, key: Hashable = WHOLE_SERVER) -> Iterator[None]:
        """One of `key`'s while inside; 429 Status when it holds `limit` already."""
        held = self.held(key)
        if held >= self.limit:
            raise errors.too_many_requests(self.message)
        self._held[key] = held + 1
        try:
            yield
        finally:
            if self._held[key] == 1:
                del self._held[key]
            else:
                self._held[key] -= 1

    @contextlib.asynccontextmanager
    async def around(self, key: Hashable, context: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
        """`context` (not entered yet) entered as one of `key`'s: 429 Status before it is
        when `key` holds `limit` already."""
        with self.hold(key):
            async with context as value:
                yield value
