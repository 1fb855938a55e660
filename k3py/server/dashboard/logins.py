"""Dashboard login sessions: a random id in an HttpOnly, SameSite=Strict, Secure cookie stands
for the user whose bearer token logged in; the id maps to that user in memory only, for at
most `ttl` seconds, and at most `max_sessions` at once (the oldest go first). Each session
also holds its open connections (the live websocket, exec terminals, followed logs and
watches: `track`), which are closed the moment it ends, by logout, eviction or expiry; a
session that has held a connection has one timer at its expiry, set once, so that no
connection is polled.

The API accepts the cookie (through Authenticator.cookie_authenticator) only on a request that
carries MARKER_HEADER, which a page of another origin cannot set without a CORS preflight the
server never grants: that, with SameSite=Strict, keeps other sites from riding the session
(CSRF). A browser cannot put a header on a websocket (the exec terminal's), so a websocket
upgrade is accepted instead when its Origin is the server's own. The login and logout routes
that open and close sessions are in __init__.py.

LoginLinks are the one-time codes `k3py dashboard-url` prints in a link: each stands for the
user who asked for it (the admin, by its client certificate), is taken once, and expires after
LINK_TTL seconds."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from k3py.server.apiserver.auth import User

__all__ = ["COOKIE", "LINK_TTL", "MARKER_HEADER", "LoginLinks", "LoginSessions", "from_page", "has_marker", "same_origin"]

COOKIE = "k3py-dashboard"
MARKER_HEADER = "X-K3py-Dashboard"
LINK_TTL = 300.0  # seconds a login link may wait to be opened


def has_marker(request: web.Request) -> bool:
    return request.headers.get(MARKER_HEADER) == "1"


def same_origin(request: web.Request) -> bool:
    """The request comes from a page of this server's own origin (a websocket's CSRF check)."""
    return request.headers.get("Origin") == f"{request.scheme}://{request.host}"


def from_page(request: web.Request) -> bool:
    """The request is the dashboard page's own: the marker header, or a websocket upgrade
    from the server's origin."""
    if has_marker(request):
        return True
    return request.headers.get("Upgrade", "").lower() == "websocket" and same_origin(request)


@dataclass(slots=True)
class _Session:
    """A session's user and expiry (fixed at login), its open connections' closers, and the
    timer at its expiry (set when it first holds a connection, cancelled when it ends)."""

    user: User
    expires: float
    closers: dict[int, Callable[[], object]] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


class LoginSessions:
    """Session id -> _Session, oldest first."""

    def __init__(self, ttl: float = 8 * 3600, max_sessions: int = 1000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, user: User) -> str:
        now = self._clock()
        self._drop_expired(now)
        while len(self._sessions) >= self.max_sessions:
            self.close(next(iter(self._sessions)))
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = _Session(user, now + self.ttl)
        return sid

    def close(self, sid: str) -> None:
        """End the session (logout, eviction, expiry) and close its open connections."""
        session = self._sessions.pop(sid, None)
        if session is None:
            return
        if session.timer is not None:
            session.timer.cancel()
        closers, session.closers = session.closers, {}  # a closer may forget itself
        for closer in closers.values():
            closer()

    def user(self, sid: str) -> User | None:
        session = self._sessions.get(sid)
        if session is None:
            return None
        if self._clock() >= session.expires:
            self.close(sid)
            return None
        return session.user

    def track(self, sid: str, closer: Callable[[], object]) -> Callable[[], None]:
        """Hold a connection open with the session `sid` (a live one, in a running loop):
        `closer` is called when the session ends; the function returned forgets it (call it
        when the connection ends first). A session already gone closes it at once.

        The session's timer is set at its first connection and kept until it ends: its
        expiry never moves, so each API request the cookie makes (every one is tracked) costs
        a dict entry, not a timer made and cancelled."""
        session = self._sessions.get(sid)
        if session is None:
            closer()
            return lambda: None
        key = id(closer)
        session.closers[key] = closer
        if session.timer is None:
            loop = asyncio.get_running_loop()
            delay = session.expires - self._clock()
            session.timer = loop.call_at(loop.time() + delay, self.close, sid)

        def forget() -> None:
            session.closers.pop(key, None)
        return forget

    def authenticate(self, request: web.Request) -> User | None:
        """The cookie's user, for a request from the page (from_page; else None)."""
        sid = request.cookies.get(COOKIE)
        if not sid or not from_page(request):
            return None
        return self.user(sid)

    def _drop_expired(self, now: float) -> None:
        while self._sessions:
            sid, session = next(iter(self._sessions.items()))
            if session.expires > now:
                return
            self.close(sid)


class LoginLinks:
    """One-time login codes -> (user, expiry); a code is forgotten once taken or expired."""

    def __init__(self, ttl: float = LINK_TTL, max_links: int = 100,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_links = max_links
        self._clock = clock
        self._links: OrderedDict[str, tuple[User, float]] = OrderedDict()

    def issue(self, user: User) -> str:
        now = self._clock()
        for code in [c for c, (_, expires) in self._links.items() if expires <= now]:
            del self._links[code]
        while len(self._links) >= self.max_links:
            self._links.popitem(last=False)
        code = secrets.token_urlsafe(32)
        self._links[code] = (user, now + self.ttl)
        return code

    def take(self, code: str) -> User | None:
        """The code's user, once: the code is gone afterwards (None if unknown or expired)."""
        user, expires = self._links.pop(code, (None, 0.0))
        return user if user is not None and self._clock() < expires else None
