"""ACK/resend bookkeeping for the tunnel: the unACKed outbox, the send queue, the duplicate
window, backoff.

Pure state machines (clock and randomness passed in) owned by cloudhub's node sessions and by
edgehub; they decide what to (re)send, the hubs own the websocket and do the I/O."""

from __future__ import annotations

import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from k3py.tunnel.message import Message

__all__ = ["Outbox", "SendQueue", "ReceivedWindow", "Backoff", "RESEND_AFTER"]

RESEND_AFTER = 30.0  # seconds without ACK on a live link before a message is sent again


@dataclass(slots=True)
class _Entry:
    msg: Message
    sent_at: float | None = None
    attempts: int = 0


class Outbox:
    """Messages sent or to send, kept in order until the peer ACKs them.

    A message with a `key` supersedes an unACKed older one with the same key (a newer pod
    spec makes the older one pointless), so the outbox is bounded by the number of objects
    rather than the number of changes while a node is offline.

    The ids not sent yet are also queued apart, oldest first, so that taking the next one
    costs the same with ten unACKed messages or a hundred thousand (a node joining a big
    cluster has a route view of every other node in flight)."""

    def __init__(self, max_len: int = 100_000) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._by_key: dict[str, str] = {}
        self._unsent: deque[str] = deque()  # may hold ids ACKed, superseded or sent since
        self.max_len = max_len
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, msg_id: str) -> bool:
        return msg_id in self._entries

    def add(self, msg: Message) -> Message:
        if msg.key:
            old = self._by_key.pop(msg.key, None)
            if old is not None:
                self._entries.pop(old, None)
            self._by_key[msg.key] = msg.id
        self._entries[msg.id] = _Entry(msg)
        self._unsent.append(msg.id)
        if len(self._unsent) > 2 * len(self._entries) + 64:  # superseded while offline
            self._queue_unsent()
        while len(self._entries) > self.max_len:
            _, entry = self._entries.popitem(last=False)
            self._forget_key(entry.msg)
            self.dropped += 1
        return msg

    def _forget_key(self, msg: Message) -> None:
        if msg.key and self._by_key.get(msg.key) == msg.id:
            del self._by_key[msg.key]

    def ack(self, ids: Iterable[str]) -> list[Message]:
        done = []
        for msg_id in ids:
            entry = self._entries.pop(msg_id, None)
            if entry is not None:
                self._forget_key(entry.msg)
                done.append(entry.msg)
        return done

    def drop_keyed(self, prefixes: tuple[str, ...]) -> int:
        """Forget the unACKed messages whose key starts with one of `prefixes` (a sync of
        their kinds, queued after them, makes them pointless; resent after it, they would
        undo it). How many went."""
        gone = [i for i, e in self._entries.items() if e.msg.key.startswith(prefixes)]
        for msg_id in gone:
            self._forget_key(self._entries.pop(msg_id).msg)
        return len(gone)

    def mark_sent(self, msg_id: str, now: float) -> None:
        entry = self._entries.get(msg_id)
        if entry is not None:
            entry.sent_at = now
            entry.attempts += 1

    def pending(self) -> list[Message]:
        """Everything unACKed, oldest first: what to send again after a reconnect."""
        return [e.msg for e in self._entries.values()]

    def next_unsent(self) -> Message | None:
        """The oldest message not sent yet, None if all were."""
        while self._unsent:
            entry = self._entries.get(self._unsent[0])
            if entry is not None and entry.sent_at is None:
                return entry.msg
            self._unsent.popleft()
        return None

    def due(self, now: float, timeout: float) -> list[Message]:
        """Sent more than `timeout` ago and still unACKed (lost on a live link)."""
        return [e.msg for e in self._entries.values()
                if e.sent_at is not None and now - e.sent_at >= timeout]

    def reset_sent(self) -> None:
        """The link dropped: nothing is in flight any more."""
        for e in self._entries.values():
            e.sent_at = None
        self._queue_unsent()

    def _queue_unsent(self) -> None:
        self._unsent = deque(i for i, e in self._entries.items() if e.sent_at is None)

    def reset(self, ids: Iterable[str]) -> None:
        """Send these again (no ACK came in time), in the outbox's order."""
        for msg_id in ids:
            entry = self._entries.get(msg_id)
            if entry is not None:
                entry.sent_at = None
        self._queue_unsent()

    def attempts(self, msg_id: str) -> int:
        entry = self._entries.get(msg_id)
        return entry.attempts if entry else 0


class SendQueue:
    """What one end of the link writes next: live messages first (ACKs, stream frames: lost
    with the link, never resent), then the outbox's messages not sent yet, oldest first.

    Both hubs' writer tasks drain it with `flush` whenever they are woken; the hub owns the
    websocket and the wakeup, this owns the order and what counts as sent."""

    def __init__(self, outbox: Outbox | None = None) -> None:
        self.outbox = outbox if outbox is not None else Outbox()
        self._live: deque[Message] = deque()

    def add(self, msg: Message) -> None:
        """Reliable: kept until ACKed."""
        self.outbox.add(msg)

    def add_live(self, msg: Message) -> None:
        self._live.append(msg)

    def ack(self, ids: Iterable[str]) -> list[Message]:
        return self.outbox.ack(ids)

    def link_reset(self) -> None:
        """The link dropped or a new one is up: queued live messages belonged to the old
        one, and nothing is in flight, so everything unACKed goes again, in order."""
        self._live.clear()
        self.outbox.reset_sent()

    def requeue_due(self, now: float, after: float = RESEND_AFTER) -> bool:
        """Send again what was sent `after` seconds ago and is still unACKed (lost on a live
        link); True if there is any, so the writer must be woken."""
        due = self.outbox.due(now, after)
        if due:
            self.outbox.reset(m.id for m in due)
        return bool(due)

    async def flush(self, write: Callable[[Message], Awaitable[None]],
                    clock: Callable[[], float] = time.monotonic) -> None:
        """Write everything pending through `write`, in order; a reliable message counts as
        sent (its resend timer starts) once `write` returned."""
        while self._live:
            await write(self._live.popleft())
        while (msg := self.outbox.next_unsent()) is not None:
            await write(msg)
            self.outbox.mark_sent(msg.id, clock())


class ReceivedWindow:
    """The ids of the last `size` messages received, to drop resent duplicates."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, msg_id: str) -> bool:
        return msg_id in self._ids

    def seen(self, msg_id: str) -> bool:
        """True if `msg_id` was already received; records it otherwise."""
        if msg_id in self._ids:
            self._ids.move_to_end(msg_id)
            return True
        self._ids[msg_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return False

    def forget(self, msg_id: str) -> None:
        """Processing failed: a resend of this id must be handled, not dropped."""
        self._ids.pop(msg_id, None)


class Backoff:
    """Exponential backoff with jitter: base * factor**n, capped, each delay in [d/2, d]."""

    def __init__(self, base: float = 0.5, cap: float = 10.0, factor: float = 2.0,
                 rand: Callable[[], float] = random.random) -> None:
        self.base, self.cap, self.factor, self._rand = base, cap, factor, rand
        self.failures = 0

    def next_delay(self) -> float:
        d = min(self.cap, self.base * self.factor ** self.failures)
        self.failures = min(self.failures + 1, 64)
        return d / 2 + self._rand() * d / 2

    def reset(self) -> None:
        self.failures = 0
