"""The newest committed values kept for point reads (store/recent.py): only what is committed
and current, a key in flight is SQLite's to answer, the oldest go first."""

from __future__ import annotations

import pytest

from k3py.server.store.backend import Event, KeyValue
from k3py.server.store.recent import RecentValues

pytestmark = pytest.mark.unit


def _put(key: str, rev: int, value: bytes = b"{}") -> Event:
    return Event(create=False, delete=False, kv=KeyValue(key, 1, rev, value))


def test_a_committed_write_is_kept_once_resolved() -> None:
    r = RecentValues()
    r.submitted("/pods/a")
    assert r.lookup("/pods/a") == (False, None)  # in flight: SQLite answers
    r.resolved(["/pods/a"], [_put("/pods/a", 5)])
    assert r.lookup("/pods/a") == (True, KeyValue("/pods/a", 1, 5, b"{}"))


def test_a_key_with_a_write_still_in_flight_is_not_kept() -> None:
    r = RecentValues()
    r.submitted("/pods/a")
    r.resolved(["/pods/a"], [_put("/pods/a", 5)])
    r.submitted("/pods/a")  # a second write leaves the kept value
    assert r.lookup("/pods/a") == (False, None)
    r.submitted("/pods/a")
    r.resolved(["/pods/a"], [_put("/pods/a", 6)])  # one of two back: still one in flight
    assert r.lookup("/pods/a") == (False, None)
    r.resolved(["/pods/a"], [_put("/pods/a", 7)])
    assert r.lookup("/pods/a")[1].mod_revision == 7


def test_a_write_that_failed_or_committed_nothing_keeps_nothing() -> None:
    r = RecentValues()
    r.submitted("/pods/a")
    r.resolved(["/pods/a"], [])  # a conflict, or a failed batch
    assert r.lookup("/pods/a") == (False, None)
    r.submitted("/pods/a")
    r.resolved(["/pods/a"], [_put("/pods/a", 9)])
    assert r.lookup("/pods/a")[0]


def test_a_delete_is_kept_as_gone() -> None:
    r = RecentValues()
    r.submitted("/pods/a")
    tomb = Event(create=False, delete=True, kv=KeyValue("/pods/a", 1, 8, b"{}"))
    r.resolved(["/pods/a"], [tomb])
    assert r.lookup("/pods/a") == (True, None)


def test_the_oldest_keys_go_first() -> None:
    r = RecentValues(size=2)
    for i, key in enumerate(("/a", "/b", "/c")):
        r.submitted(key)
        r.resolved([key], [_put(key, i + 1)])
    assert len(r) == 2
    assert r.lookup("/a") == (False, None)
    assert r.lookup("/b")[0] and r.lookup("/c")[0]


def test_the_values_kept_stay_within_their_bytes_and_a_large_one_is_not_kept() -> None:
    r = RecentValues(size=100, budget=10, value_max=6)
    for key, value in (("/a", b"1234"), ("/b", b"1234"), ("/c", b"1234")):
        r.submitted(key)
        r.resolved([key], [_put(key, 1, value)])
    assert r.bytes == 8 and r.lookup("/a") == (False, None)  # the oldest went for the budget
    r.submitted("/big")
    r.resolved(["/big"], [_put("/big", 2, b"1234567")])
    assert r.lookup("/big") == (False, None) and r.bytes == 8
    r.submitted("/b")  # a key written again leaves, with its bytes
    assert r.bytes == 4
    r.resolved(["/b"], [_put("/b", 3, b"12")])
    assert r.bytes == 6 and r.lookup("/b")[1].value == b"12"
    r.clear()
    assert r.bytes == 0 and len(r) == 0
