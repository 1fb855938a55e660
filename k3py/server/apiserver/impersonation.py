"""Impersonation (`kubectl --as`, `--as-group`, `--as-uid`): the Impersonate-User,
Impersonate-Group, Impersonate-Uid and Impersonate-Extra-<key> headers turn the authenticated
user into another one, each part checked first with the `impersonate` verb as upstream:
users (or serviceaccounts for system:serviceaccount:NS:NAME) and groups in the core group,
uids and userextras/<key> in authentication.k8s.io.

The ApiServer calls `impersonate` right after authentication; the result then goes through
the whole authorizer chain like any user."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote

from k3py.api import errors
from k3py.server.apiserver.auth import AuthorizerChain, User

__all__ = ["impersonate", "USER_HEADER", "GROUP_HEADER", "UID_HEADER", "EXTRA_PREFIX"]

USER_HEADER = "Impersonate-User"
GROUP_HEADER = "Impersonate-Group"
UID_HEADER = "Impersonate-Uid"
EXTRA_PREFIX = "impersonate-extra-"
_AUTHN = "authentication.k8s.io"
_SA_PREFIX = "system:serviceaccount:"


def _extras(headers: Mapping[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in headers.items():
        if key.lower().startswith(EXTRA_PREFIX):
            out.setdefault(unquote(key[len(EXTRA_PREFIX):].lower()), []).append(value)
    return out


def _all(headers, name: str) -> list[str]:
    getall = getattr(headers, "getall", None)
    return list(getall(name, [])) if getall else ([headers[name]] if name in headers else [])


def impersonate(headers: Mapping[str, str], user: User, chain: AuthorizerChain) -> User:
    """The user the request acts as: `user` itself when no Impersonate-* header is set;
    403 when `user` may not impersonate a requested part; 400 for groups, uid or extras
    without a user."""
    name = headers.get(USER_HEADER)
    groups = _all(headers, GROUP_HEADER)
    uid = headers.get(UID_HEADER)
    extra = _extras(headers)
    if name is None:
        if groups or uid is not None or extra:
            raise errors.bad_request("requested impersonation of groups, uid or extra "
                                     "without impersonating a user")
        return user
    sa_namespace = None
    if name.startswith(_SA_PREFIX) and name.count(":") == 3:
        sa_namespace, sa = name[len(_SA_PREFIX):].split(":")
        chain.authorize(user, "impersonate", "", "serviceaccounts", sa_namespace, sa)
    else:
        chain.authorize(user, "impersonate", "", "users", None, name)
    for group in groups:
        chain.authorize(user, "impersonate", "", "groups", None, group)
    if sa_namespace is not None and not groups:  # known from the name: nothing to ask
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}"]
    if uid is not None:
        chain.authorize(user, "impersonate", _AUTHN, "uids", None, uid)
    for key, values in extra.items():
        for value in values:
            chain.authorize(user, "impersonate", _AUTHN, "userextras", None, value, key)
    implied = "system:unauthenticated" if name == "system:anonymous" else "system:authenticated"
    if implied not in groups:
        groups.append(implied)
    return User(name, tuple(groups), uid or "",
                tuple((k, tuple(v)) for k, v in sorted(extra.items())))
