"""Authentication (client certificates, bearer tokens) and authorization for API requests.

Anonymous requests get 401 except on health endpoints; system:masters may do anything; nodes
are limited to what a kubelet needs (tightened by the agent work); RBAC (added by bootstrap to
the server's AuthorizerChain) grants the rest; other users get 403. The ApiServer owns one
Authenticator and one AuthorizerChain; handlers read them."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from k3py.api import errors

__all__ = ["User", "Authenticator", "Authorizer", "AuthorizerChain", "node_allows",
           "PUBLIC_PATHS"]

PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version", "/ping"})


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = field(default=())

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


class Authenticator:
    """Maps a request to a User. Token authenticators are pluggable (node and SA tokens)."""

    def __init__(self) -> None:
        self._static_tokens: dict[str, User] = {}
        self.token_authenticators: list[Callable[[str], User | None]] = []

    def add_token(self, token: str, user: User) -> None:
        self._static_tokens[token] = user

    def authenticate(self, request: web.Request) -> User | None:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
            for known, user in self._static_tokens.items():
                if hmac.compare_digest(known, token):
                    return user
            for fn in self.token_authenticators:
                user = fn(token)
                if user is not None:
                    return user
            return None
        transport = request.transport
        if transport is not None:
            cert = transport.get_extra_info("peercert")
            if cert:
                return _subject_from_peercert(cert)
        return None


# (user, verb, group, plural, namespace, name, subresource) -> True to allow; False only
# means "no opinion": the next authorizer is asked, and when none allows, the request is denied
Authorizer = Callable[[User, str, str, str, str | None, str | None, str], bool]


class AuthorizerChain:
    """One server's authorizers in order: system:masters, Node, then what bootstrap adds
    (RBAC), then deny. `names()` lists them as they run."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Authorizer]] = [("SystemMasters", _admin_allows),
                                                     ("Node", node_allows)]

    def add(self, name: str, fn: Authorizer) -> None:
        self._steps.append((name, fn))

    def names(self) -> list[str]:
        return [name for name, _ in self._steps] + ["Deny"]

    def authorize(self, user: User, verb: str, group: str, plural: str,
                  namespace: str | None, name: str | None = None,
                  subresource: str = "") -> None:
        """Raise 403 unless `user` may do `verb` on the resource."""
        for _, fn in self._steps:
            if fn(user, verb, group, plural, namespace, name, subresource):
                return
        what = f"{plural}/{subresource}" if subresource else plural
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        raise errors.forbidden(
            f'{plural}{"." + group if group else ""}{" " + repr(name).replace(chr(39), chr(34)) if name else ""} '
            f'is forbidden: User "{user.name}" cannot {verb} resource "{what}" in API group '
            f'"{group}"{where}', group, plural, name)


def _admin_allows(user: User, verb: str, group: str, plural: str, namespace: str | None,
                  name: str | None, subresource: str) -> bool:
    return user.is_admin


def node_allows(user: User, verb: str, group: str, plural: str, namespace: str | None,
                name: str | None, subresource: str) -> bool:
    """What a kubelet needs, for users of the system:nodes group named system:node:<name>."""
    node = user.node_name
    return node is not None and _node_allowed(node, verb, group, plural, name, subresource)


_NODE_READ = {"pods", "configmaps", "secrets", "services", "endpoints", "nodes",
              "persistentvolumeclaims", "persistentvolumes", "serviceaccounts", "leases",
              "namespaces", "devices", "devicemodels", "endpointslices"}


def _node_allowed(node: str, verb: str, group: str, plural: str, name: str | None,
                  subresource: str) -> bool:
    if verb in ("get", "list", "watch") and plural in _NODE_READ:
        return True
    if plural == "nodes":
        return name in (None, node) and verb in ("create", "update", "patch", "get")
    if plural == "leases" and group == "coordination.k8s.io":
        return True
    if plural == "events":
        return verb in ("create", "update", "patch")
    if plural == "pods":
        return subresource == "status" or verb in ("delete", "create")
    if plural == "devices" and subresource == "status":
        return True
    return plural == "serviceaccounts" and subresource == "token"
