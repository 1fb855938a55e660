"""Bootstrap tokens as upstream defines them: `<id>.<secret>` (6 and 16 of [a-z0-9]), kept as
the Secret `bootstrap-token-<id>` in kube-system of type bootstrap.kubernetes.io/token with
token-id, token-secret, expiration (RFC 3339), description and usage-bootstrap-* keys.

`k3py token create|list|delete` (cli/token.py) writes and reads these Secrets; the server's
join route (server/edge/nodeauth.py) accepts a token while `join_refusal` finds nothing wrong
with its Secret, and the API (server/bootstrap.py) takes one as a bearer token for the user
`system:bootstrap:<id>` in the groups `bearer_groups` gives, as upstream's
--enable-bootstrap-token-auth. No I/O."""

from __future__ import annotations

import base64
import datetime as _dt
import hmac
import re
import secrets
import string

__all__ = ["SECRET_TYPE", "NAMESPACE", "USER_PREFIX", "GROUP", "parse", "secret_name",
           "new_token", "token_secret", "join_refusal", "bearer_groups", "string_data"]

SECRET_TYPE = "bootstrap.kubernetes.io/token"
NAMESPACE = "kube-system"
_TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
_ALPHABET = string.ascii_lowercase + string.digits
USER_PREFIX = "system:bootstrap:"
GROUP = "system:bootstrappers"
# an auth-extra-groups entry, as upstream's ValidateBootstrapGroupName
_EXTRA_GROUP = re.compile(r"\Asystem:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]\Z")
USAGES = ("authentication", "signing")  # usage-bootstrap-<usage>, as K3s's default


def parse(token: str) -> tuple[str, str] | None:
    """(id, secret) of a bootstrap token, None for anything else."""
    m = _TOKEN.match(token.strip())
    return (m[1], m[2]) if m else None


def secret_name(token_id: str) -> str:
    return f"bootstrap-token-{token_id}"


def new_token() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(6)) + "." + \
        "".join(secrets.choice(_ALPHABET) for _ in range(16))


def token_secret(token: str, ttl: float, description: str, now: _dt.datetime) -> dict:
    """The Secret for `token`; `ttl` seconds from `now` until it expires (0: never)."""
    token_id, secret = parse(token) or ("", "")
    data = {"token-id": token_id, "token-secret": secret}
    if ttl > 0:
        data["expiration"] = (now + _dt.timedelta(seconds=ttl)).strftime("%Y-%m-%dT%H:%M:%SZ")
    if description:
        data["description"] = description
    data.update({f"usage-bootstrap-{u}": "true" for u in USAGES})
    return {"apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
            "metadata": {"name": secret_name(token_id), "namespace": NAMESPACE},
            "stringData": data}


def string_data(secret: dict) -> dict[str, str]:
    """A stored Secret's data, decoded (undecodable values read as "")."""
    out = {}
    for k, v in (secret.get("data") or {}).items():
        try:
            out[k] = base64.b64decode(v).decode()
        except (ValueError, TypeError):
            out[k] = ""
    return out


def join_refusal(secret: dict | None, token: str, now: _dt.datetime) -> str:
    """Why `token` may not join a node ("" = it may), its Secret being `secret` (None: no
    such Secret): the type, the secret, the authentication usage and the expiration."""
    parts = parse(token)
    if parts is None or secret is None or secret.get("type") != SECRET_TYPE or \
            (secret.get("metadata") or {}).get("deletionTimestamp"):
        return "no such bootstrap token"
    data = string_data(secret)
    if data.get("token-id") != parts[0] or \
            not hmac.compare_digest(data.get("token-secret", "").encode(), parts[1].encode()):
        return "no such bootstrap token"
    if data.get("usage-bootstrap-authentication") != "true":
        return f"bootstrap token {parts[0]} is not for authentication"
    expiration = data.get("expiration")
    if expiration:
        try:
            expires = _dt.datetime.fromisoformat(expiration.replace("Z", "+00:00"))
        except ValueError:
            return f"bootstrap token {parts[0]} has an unreadable expiration"
        if expires <= now:
            return f"bootstrap token {parts[0]} expired at {expiration}"
    return ""


def bearer_groups(secret: dict | None, token: str, now: _dt.datetime) -> list[str] | None:
    """The groups of the user `token` authenticates as (GROUP, then the Secret's
    auth-extra-groups), or None when it does not: `join_refusal` finds something wrong, or an
    extra group is not system:bootstrappers:<name>, as upstream's bootstrap authenticator."""
    if join_refusal(secret, token, now):
        return None
    groups = [GROUP]
    for group in string_data(secret or {}).get("auth-extra-groups", "").split(","):
        group = group.strip()
        if not group:
            continue
        if not _EXTRA_GROUP.match(group):
            return None
        if group not in groups:
            groups.append(group)
    return groups
