"""ACK/resend bookkeeping: outbox order, coalescing, resend after reconnect, dedup window, backoff.

Pure tests of k3py.tunnel.reliability (clock and randomness injected)."""

from __future__ import annotations

import pytest

from k3py.tunnel.message import new_message
from k3py.tunnel.reliability import Backoff, Outbox, ReceivedWindow, SendQueue

pytestmark = pytest.mark.unit


def _msg(key: str = "", n: int = 0):
    return new_message(source="s", group="resource", operation="update", key=key,
                       content={"n": n})


def test_outbox_keeps_order_until_acked():
    box = Outbox()
    a, b, c = box.add(_msg()), box.add(_msg()), box.add(_msg())
    assert [m.id for m in box.pending()] == [a.id, b.id, c.id]
    assert box.ack([b.id, "unknown"]) == [b]
    assert [m.id for m in box.pending()] == [a.id, c.id]


def test_newer_message_for_same_key_supersedes_unacked_one():
    box = Outbox()
    old = box.add(_msg("pods/ns/p", 1))
    other = box.add(_msg("pods/ns/q", 1))
    new = box.add(_msg("pods/ns/p", 2))
    assert [m.id for m in box.pending()] == [other.id, new.id]
    assert old.id not in box
    # a late ACK of the superseded id is harmless
    assert box.ack([old.id]) == []
    assert len(box) == 2


def test_drop_keyed_forgets_the_unacked_messages_of_some_kinds():
    box = Outbox()
    view = box.add(_msg("podpeers/ns/p", 1))
    ns = box.add(_msg("namespaces//ns", 1))
    pod = box.add(_msg("pods/ns/p", 1))
    box.mark_sent(view.id, 1.0)
    assert box.drop_keyed(("podpeers/", "namespaces/")) == 2
    assert [m.id for m in box.pending()] == [pod.id]
    assert box.next_unsent() is pod
    again = box.add(_msg("podpeers/ns/p", 2))  # its key is free again
    assert [m.id for m in box.pending()] == [pod.id, again.id] and ns.id not in box


def test_resend_after_reconnect_and_timeout():
    box = Outbox()
    a, b = box.add(_msg()), box.add(_msg())
    assert box.next_unsent() == a
    box.mark_sent(a.id, now=100.0)
    assert box.next_unsent() == b
    box.mark_sent(b.id, now=105.0)
    assert box.next_unsent() is None
    assert box.due(now=110.0, timeout=10.0) == [a]
    box.reset([a.id])
    assert box.next_unsent() == a
    box.reset_sent()
    assert box.next_unsent() == a
    box.mark_sent(a.id, now=120.0)
    assert box.next_unsent() == b
    assert box.attempts(a.id) == 2


def test_next_unsent_skips_acked_and_superseded():
    box = Outbox()
    a, b, c = box.add(_msg("a")), box.add(_msg("b")), box.add(_msg("c"))
    box.ack([a.id])
    newer_b = box.add(_msg("b"))
    assert box.next_unsent() == c
    box.mark_sent(c.id, now=1.0)
    assert box.next_unsent() == newer_b
    assert b.id not in box


def test_unsent_queue_stays_bounded_while_offline():
    box = Outbox()
    for _ in range(10_000):
        box.add(_msg("status"))  # each supersedes the one before
    assert len(box) == 1 and len(box._unsent) <= 2 * len(box) + 64
    assert box.next_unsent() is not None


def test_outbox_bound_drops_oldest():
    box = Outbox(max_len=3)
    msgs = [box.add(_msg(f"k{i}")) for i in range(5)]
    assert [m.id for m in box.pending()] == [m.id for m in msgs[2:]]
    assert box.dropped == 2
    # the key index forgot the dropped ones: re-adding k0 does not remove anything else
    box.add(_msg("k0"))
    assert len(box) == 3


def test_received_window_drops_duplicates_within_bound():
    w = ReceivedWindow(size=3)
    assert not w.seen("a")
    assert w.seen("a")
    for i in "bcd":
        assert not w.seen(i)
    assert len(w) == 3
    assert "a" not in w  # evicted: the window is bounded
    assert not w.seen("a")


def test_backoff_grows_with_jitter_and_caps_at_ten_seconds():
    lo = Backoff(base=0.5, cap=10.0, rand=lambda: 0.0)
    hi = Backoff(base=0.5, cap=10.0, rand=lambda: 0.999999)
    lows = [lo.next_delay() for _ in range(10)]
    highs = [hi.next_delay() for _ in range(10)]
    assert lows[0] == pytest.approx(0.25) and highs[0] == pytest.approx(0.5, rel=1e-3)
    assert all(x <= y for x, y in zip(highs, highs[1:], strict=False))
    assert max(highs) <= 10.0 and highs[-1] == pytest.approx(10.0, rel=1e-3)
    assert lows[-1] == pytest.approx(5.0)
    hi.reset()
    assert hi.next_delay() == pytest.approx(0.5, rel=1e-3)


async def test_send_queue_writes_live_first_then_unsent_in_order_and_resends_due():
    q = SendQueue()
    a, b = _msg("a"), _msg("b")
    q.add(a)
    q.add(b)
    ack = new_message(source="s", group="tunnel", operation="ack")
    q.add_live(ack)
    written: list = []

    async def write(msg):
        written.append(msg.id)
    await q.flush(write, clock=lambda: 100.0)
    assert written == [ack.id, a.id, b.id]
    written.clear()
    await q.flush(write, clock=lambda: 101.0)
    assert written == []  # sent, waiting for the ACK
    q.ack([a.id])
    assert not q.requeue_due(120.0, after=30.0)
    assert q.requeue_due(130.0, after=30.0)  # b: sent at 100, no ACK by 130
    await q.flush(write, clock=lambda: 130.0)
    assert written == [b.id]


async def test_send_queue_link_reset_drops_live_and_sends_unacked_again():
    q = SendQueue()
    a = _msg("a")
    q.add(a)
    written: list = []

    async def write(msg):
        written.append(msg.id)
    await q.flush(write)
    q.add_live(new_message(source="s", group="stream", operation="data"))
    q.link_reset()
    await q.flush(write)
    assert written == [a.id, a.id]


async def test_send_queue_write_failure_leaves_the_message_unsent():
    q = SendQueue()
    a = _msg("a")
    q.add(a)

    async def broken(msg):
        raise ConnectionResetError

    with pytest.raises(ConnectionResetError):
        await q.flush(broken)
    assert q.outbox.next_unsent() == a
