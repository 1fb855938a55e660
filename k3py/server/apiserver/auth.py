"""Authentication (client certificates, bearer tokens) and authorization for API requests.

Anonymous requests get 401 except on health endpoints; system:masters may do anything; the
Node authorizer (k3py.server.nodeauthz) and RBAC (k3py.server.rbac), added by bootstrap to the
server's AuthorizerChain, grant the rest; everything else gets 403. The ApiServer owns one
Authenticator and one AuthorizerChain; handlers read them."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field

from aiohttp import web

from k3py.api import errors

__all__ = ["FailedAuthLimiter", "User", "Attributes", "Authenticator", "Authorizer", "AuthorizerChain",
           "field_requirements", "PUBLIC_PATHS", "REQUEST_USER"]

_log = logging.getLogger("k3py.auth")

PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version", "/ping"})


@dataclass(frozen=True)
class User:
    """Who a request is from; `extra`: (key, values) pairs (impersonation's Extra-*)."""
    name: str
    groups: tuple[str, ...] = field(default=())
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def is_admin(self) -> bool:
        return "system:masters" in self.groups

    @property
    def node_name(self) -> str | None:
        if "system:nodes" in self.groups and self.name.startswith("system:node:"):
            return self.name[len("system:node:"):]
        return None


def _subject_from_peercert(cert: dict) -> User | None:
    cn = ""
    orgs: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    if not cn:
        return None
    return User(cn, tuple(orgs) + ("system:authenticated",))


# The user of the API request being served (None for the server's own writes), for the
# checks that run deep in a write, as upstream reads it from the request context: RBAC's
# escalation check, and the audit log. The ApiServer sets it once a request is authenticated,
# as Authenticator.require does for the routes that authenticate themselves.
REQUEST_USER: ContextVar[User | None] = ContextVar("k3py_request_user", default=None)


class Authenticator:
    """Maps a request to a User. Token authenticators are pluggable (node and SA tokens);
    `cookie_authenticator` (the dashboard's sessions, k3py.server.dashboard) is asked only
    for a request with neither a bearer token nor a client certificate."""

    def __init__(self) -> None:
        self.failures = FailedAuthLimiter()  # wrong credentials per address (429 beyond)
        self._static_tokens: dict[str, User] = {}
        self.token_authenticators: list[Callable[[str], User | None]] = []
        self.cookie_authenticator: Callable[[web.Request], User | None] | None = None

    def add_token(self, token: str, user: User) -> None:
        self._static_tokens[token] = user

    def authenticate_token(self, token: str) -> User | None:
        """The user a bearer token stands for, or None."""
        for known, user in self._static_tokens.items():
            if hmac.compare_digest(known, token):
                return user
        for fn in self.token_authenticators:
            user = fn(token)
            if user is not None:
                return user
        return None

    def authenticate(self, request: web.Request) -> User | None:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            return self.authenticate_token(auth[7:].strip())
        transport = request.transport
        if transport is not None:
            cert = transport.get_extra_info("peercert")
            if cert:
                return _subject_from_peercert(cert)
        if self.cookie_authenticator is not None:
            return self.cookie_authenticator(request)
        return None

    def identify(self, request: web.Request) -> User | None:
        """The request's user (None without a credential it accepts), as every request is
        authenticated, the API's and the routes' that authenticate themselves: a bearer
        token from an address that sent too many wrong ones is a 429 (`failures`), and a
        wrong credential is counted against its address."""
        peer, presented = request.remote or "", presented_credential(request)
        if presented.endswith("token") and self.failures.blocked(peer, time.monotonic()):
            raise errors.too_many_requests("too many failed authentication attempts from this "
                                           "address; try again later")
        user = self.authenticate(request)
        if user is None and presented:  # a wrong credential (not none at all)
            self.failures.failed(peer, presented, time.monotonic())
        return user

    def require(self, request: web.Request) -> User:
        """The user of a route that authenticates itself (the tunnel, the dashboard, the
        servers' own endpoints), as the API does (`identify`): 401 without a credential it
        accepts, and the user recorded in REQUEST_USER for the audit log."""
        user = self.identify(request)
        if user is None:
            raise errors.unauthorized()
        REQUEST_USER.set(user)
        return user


def presented_credential(request: web.Request) -> str:
    """The kind of credential a request carried (for the failed-authentication log)."""
    if request.headers.get("Authorization"):
        return request.headers["Authorization"].split(" ", 1)[0].lower() + " token"
    transport = request.transport
    if transport is not None and transport.get_extra_info("peercert"):
        return "client certificate"
    return ""


@dataclass(frozen=True)
class Attributes:
    """What a request asks, as an authorizer sees it (upstream's authorizer.Attributes).
    `fields`: the list/watch request's field selector as equality terms
    (`spec.nodeName=n1` -> {"spec.nodeName": "n1"}), which the Node authorizer uses.
    `path`: set for a non-resource request (`/version`, `/apis`), whose group and plural
    are empty."""
    user: User
    verb: str
    group: str
    plural: str
    namespace: str | None
    name: str | None = None
    subresource: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)
    path: str | None = None

    @property
    def resource(self) -> str:
        return f"{self.plural}/{self.subresource}" if self.subresource else self.plural


# True to allow; False only means "no opinion": the next authorizer is asked, and when none
# allows, the request is denied
Authorizer = Callable[[Attributes], bool]


class AuthorizerChain:
    """One server's authorizers in order: system:masters, then what bootstrap adds (the Node
    authorizer, RBAC), then deny. `names()` lists them as they run."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Authorizer]] = [("SystemMasters", _admin_allows)]

    def add(self, name: str, fn: Authorizer) -> None:
        self._steps.append((name, fn))

    def names(self) -> list[str]:
        return [name for name, _ in self._steps] + ["Deny"]

    def allows(self, attrs: Attributes) -> bool:
        return any(fn(attrs) for _, fn in self._steps)

    def authorize_path(self, user: User, verb: str, path: str) -> None:
        """Raise 403 unless `user` may do `verb` on the non-resource `path`."""
        if not self.allows(Attributes(user, verb, "", "", None, path=path)):
            raise errors.forbidden(f'forbidden: User "{user.name}" cannot {verb} path '
                                   f'"{path}"')

    def authorize(self, user: User, verb: str, group: str, plural: str,
                  namespace: str | None, name: str | None = None,
                  subresource: str = "", fields: Mapping[str, str] | None = None) -> None:
        """Raise 403 unless `user` may do `verb` on the resource."""
        attrs = Attributes(user, verb, group, plural, namespace, name, subresource,
                           fields or {})
        if self.allows(attrs):
            return
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        raise errors.forbidden(
            f'{plural}{"." + group if group else ""}{" " + repr(name).replace(chr(39), chr(34)) if name else ""} '
            f'is forbidden: User "{user.name}" cannot {verb} resource "{attrs.resource}" in '
            f'API group "{group}"{where}', group, plural, name)


def _admin_allows(attrs: Attributes) -> bool:
    return attrs.user.is_admin


def field_requirements(selector: str) -> dict[str, str]:
    """The equality terms of a field selector ("a=b,c==d"); `!=` terms are left out (they
    narrow nothing an authorizer could rely on)."""
    out: dict[str, str] = {}
    for term in selector.split(","):
        if "!=" in term:
            continue
        key, sep, value = term.partition("==") if "==" in term else term.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


class FailedAuthLimiter:
    """Failed authentication per source address: after `limit` wrong credentials within
    `window` seconds, the address gets 429 for every bearer-token request until the window
    has passed, so a token cannot be guessed at line speed (client certificates, which cannot
    be guessed, still pass). Each failing address is logged once a window, with the kind of
    credential it tried and never the credential itself."""

    def __init__(self, limit: int = 20, window: float = 10.0, max_addresses: int = 10000) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._seen: dict[str, tuple[float, int]] = {}  # address -> (window start, failures)

    def blocked(self, address: str, now: float) -> bool:
        start, count = self._seen.get(address, (0.0, 0))
        return count >= self.limit and now - start < self.window

    def failed(self, address: str, credential: str, now: float) -> None:
        start, count = self._seen.get(address, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        if count == 0:
            _log.warning("authentication failed from %s (%s)", address, credential)
        if len(self._seen) >= self.max_addresses and address not in self._seen:
            self._seen = {a: v for a, v in self._seen.items() if now - v[0] < self.window}
        self._seen[address] = (start, count + 1)
