"""Dashboard login sessions: they expire, are bounded in count (oldest dropped first), and
close on logout. Login links are one-time and short-lived."""

from __future__ import annotations

import asyncio

import pytest

from k3py.server.apiserver.auth import User
from k3py.server.dashboard.logins import LoginLinks, LoginSessions

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_session_expires():
    clock = Clock()
    logins = LoginSessions(ttl=60, clock=clock)
    sid = logins.open(User("alice"))
    assert logins.user(sid) == User("alice")
    clock.now += 60
    assert logins.user(sid) is None
    assert len(logins) == 0


def test_sessions_are_bounded_oldest_first():
    logins = LoginSessions(max_sessions=2, clock=Clock())
    first, second, third = (logins.open(User(n)) for n in ("a", "b", "c"))
    assert logins.user(first) is None
    assert logins.user(second) == User("b") and logins.user(third) == User("c")
    assert len(logins) == 2


def test_logout_closes_only_its_session():
    logins = LoginSessions(clock=Clock())
    mine, other = logins.open(User("a")), logins.open(User("b"))
    logins.close(mine)
    logins.close("never-issued")
    assert logins.user(mine) is None and logins.user(other) == User("b")


def test_a_login_link_is_taken_once_and_expires():
    clock = Clock()
    links = LoginLinks(ttl=300, clock=clock)
    code = links.issue(User("system:admin", ("system:masters",)))
    assert links.take(code) == User("system:admin", ("system:masters",))
    assert links.take(code) is None  # one use
    late = links.issue(User("system:admin"))
    clock.now += 300
    assert links.take(late) is None
    assert links.take("made-up") is None


def test_login_links_are_bounded():
    links = LoginLinks(max_links=2)
    first, *_ = [links.issue(User(f"u{i}")) for i in range(3)]
    assert links.take(first) is None  # the oldest was dropped


def test_an_ending_session_closes_its_connections_and_its_timer_notices_expiry():
    async def check() -> None:
        logins = LoginSessions(ttl=60)
        mine, other = logins.open(User("a")), logins.open(User("b"))
        closed: list[str] = []
        logins.track(mine, lambda: closed.append("live"))
        forget = logins.track(mine, lambda: closed.append("exec"))
        logins.track(other, lambda: closed.append("other"))
        forget()  # that connection ended first
        logins.close(mine)  # logout
        assert closed == ["live"]
        logins.track(mine, lambda: closed.append("late"))  # it ended while this one opened
        assert closed == ["live", "late"]
        short = LoginSessions(ttl=0.05)
        sid = short.open(User("c"))
        expired = asyncio.Event()
        short.track(sid, expired.set)
        await asyncio.wait_for(expired.wait(), 10)  # no request needed to notice it
        assert short.user(sid) is None and len(short) == 0
    asyncio.run(check())


def test_a_session_sets_one_timer_however_many_requests_it_makes():
    """Every API request with the cookie is tracked (and forgotten when it ends): the
    session's timer is set at its first connection and kept, not made and cancelled per
    request; it still ends the session at its expiry, with or without connections open."""
    async def check() -> None:
        loop = asyncio.get_running_loop()
        timers: list[float] = []
        call_at = loop.call_at

        def counting_call_at(when, callback, *args, **kw):
            if callback == logins.close:  # not asyncio's own (sleep, wait_for)
                timers.append(when)
            return call_at(when, callback, *args, **kw)
        loop.call_at = counting_call_at  # type: ignore[method-assign]
        logins = LoginSessions(ttl=0.2)
        sid = logins.open(User("a"))
        for _ in range(50):  # requests, one after the other
            logins.track(sid, lambda: None)()
        assert len(timers) == 1
        idle = logins.open(User("b"))
        logins.track(idle, lambda: None)()  # its only request ended long before its expiry
        ended = asyncio.Event()
        logins.track(sid, ended.set)
        await asyncio.wait_for(ended.wait(), 10)
        assert len(timers) == 2
        deadline = loop.time() + 10
        while len(logins) and loop.time() < deadline:  # idle's timer ends it too
            await asyncio.sleep(0.05)
        assert len(logins) == 0, "a session whose connections all ended outlived its expiry"
    asyncio.run(check())


def test_a_closer_that_forgets_itself_is_fine():
    async def check() -> None:
        logins = LoginSessions()
        sid = logins.open(User("a"))
        forgets = []
        forgets.append(logins.track(sid, lambda: forgets[0]()))
        logins.track(sid, lambda: None)
        logins.close(sid)
        assert len(logins) == 0
    asyncio.run(check())
