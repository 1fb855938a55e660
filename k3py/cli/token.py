"""`k3py token [--data-dir DIR]`: print the join token agents use (K3s: server/node-token),
read from <data-dir>/server/token as written by the server's first start.

`k3py token create [TOKEN] [--ttl 24h] [--description TEXT]`, `k3py token list` and
`k3py token delete ID...`, as K3s's: bootstrap tokens (k3py.api.bootstraptoken), Secrets in
kube-system written through the running server's API as its admin (cli/adminapi.py). An
agent joins with `--token` set to what `create` prints, until the token expires or is
deleted."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os

from k3py import PROGRAM
from k3py.api import bootstraptoken
from k3py.api.duration import human_duration
from k3py.cli.adminapi import AdminAPI
from k3py.cli.flags import TOKEN, UsageError, parse
from k3py.config import ServerConfig

__all__ = ["token_command"]

_SECRETS = f"/api/v1/namespaces/{bootstraptoken.NAMESPACE}/secrets"
_DEFAULT_TTL = 24 * 3600.0  # K3s's and kubeadm's


def token_command(argv: list[str]) -> int:
    action = argv[0] if argv and argv[0] in ("create", "list", "delete") else ""
    positional: list[str] = []
    values = parse(argv[1:] if action else argv, TOKEN, positional=positional)
    config = ServerConfig(data_dir=values.get("data_dir") or ServerConfig().data_dir)
    if not action:
        if positional:
            raise UsageError(f"unknown token command {positional[0]!r}; one of create, list, "
                             f"delete (or none, to print the server's join token)")
        print(_server_token(config))
        return 0
    api = AdminAPI(config, values.get("server", ""))
    if action == "create":
        return _create(api, config, values, positional)
    if action == "list":
        return _list(api)
    return _delete(api, positional)


def _server_token(config: ServerConfig) -> str:
    try:
        with open(config.token_path) as f:
            token = f.read().strip()
    except FileNotFoundError:
        raise UsageError(f"no token at {config.token_path}; start '{PROGRAM} server' first, "
                         f"or pass the server's --data-dir") from None
    except PermissionError:
        raise UsageError(f"cannot read {config.token_path}: permission denied; run as "
                         f"root (sudo {PROGRAM} token)") from None
    except OSError as e:
        raise UsageError(f"cannot read {config.token_path}: {e.strerror}") from None
    if not token:
        raise UsageError(f"{config.token_path} is empty; restart '{PROGRAM} server' to "
                         f"write it again")
    return token


def _create(api: AdminAPI, config: ServerConfig, values: dict, positional: list[str]) -> int:
    if len(positional) > 1:
        raise UsageError(f"'{PROGRAM} token create' takes at most one token, got "
                         f"{' '.join(positional)}")
    token = positional[0] if positional else bootstraptoken.new_token()
    if bootstraptoken.parse(token) is None:
        raise UsageError(f"invalid token {token!r}: a bootstrap token is "
                         f"[a-z0-9]{{6}}.[a-z0-9]{{16}}")
    ttl = values.get("ttl", _DEFAULT_TTL)
    api.call("POST", _SECRETS, "the new token", bootstraptoken.token_secret(
        token, ttl, values.get("description", ""), _dt.datetime.now(_dt.UTC)))
    with open(os.path.join(config.tls_dir, "server-ca.crt"), "rb") as f:
        ca_hash = hashlib.sha256(f.read()).hexdigest()
    print(f"K10{ca_hash}::{token}")
    return 0


def _list(api: AdminAPI) -> int:
    answer = api.call("GET", _SECRETS + f"?fieldSelector=type%3D{bootstraptoken.SECRET_TYPE}",
                      "the token list")
    now = _dt.datetime.now(_dt.UTC)
    rows = [("TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION")]
    for secret in answer.get("items") or []:
        data = bootstraptoken.string_data(secret)
        expires = data.get("expiration", "")
        ttl = "<forever>"
        if expires:
            try:
                left = _dt.datetime.fromisoformat(expires.replace("Z", "+00:00")) - now
                ttl = human_duration(left) if left.total_seconds() > 0 else "<invalid>"
            except ValueError:
                ttl = "<invalid>"
        usages = ",".join(k.removeprefix("usage-bootstrap-") for k, v in sorted(data.items())
                          if k.startswith("usage-bootstrap-") and v == "true")
        rows.append((f"{data.get('token-id', '')}.{data.get('token-secret', '')}", ttl,
                     expires or "<never>", usages or "<none>",
                     data.get("description") or "<none>"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _delete(api: AdminAPI, ids: list[str]) -> int:
    if not ids:
        raise UsageError(f"'{PROGRAM} token delete' needs the id (or the whole token) of each "
                         f"token to delete")
    for given in ids:
        token_id = given.rpartition("::")[2].partition(".")[0]
        api.call("DELETE", f"{_SECRETS}/{bootstraptoken.secret_name(token_id)}",
                 f"deleting token {token_id}")
        print(f"bootstrap token {token_id!r} deleted")
    return 0
