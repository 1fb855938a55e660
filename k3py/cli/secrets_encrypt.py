"""`k3py secrets-encrypt status|prepare|rotate|reencrypt|rotate-keys [--data-dir DIR]
[--server URL]`, as K3s's: asks the running server (its admin certificate and CA from
<data-dir>/server/tls) to show or rotate the keys that encrypt Secrets at rest."""

from __future__ import annotations

from k3py import PROGRAM
from k3py.cli.adminapi import AdminAPI
from k3py.cli.flags import SECRETS, UsageError, parse
from k3py.config import ServerConfig

__all__ = ["secrets_encrypt_command"]

_ACTIONS = ("status", "prepare", "rotate", "reencrypt", "rotate-keys")
_PATH = "/v1-k3py/encrypt/"  # k3py.server.secretsencrypt.ENCRYPT_PATH (cli imports no server)


def secrets_encrypt_command(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {PROGRAM} secrets-encrypt {{{'|'.join(_ACTIONS)}}} [--data-dir DIR] "
              f"[--server URL]")
        return 0
    action, rest = argv[0], argv[1:]
    if action not in _ACTIONS:
        raise UsageError(f"unknown secrets-encrypt command {action!r}; one of "
                         f"{', '.join(_ACTIONS)}")
    values = parse(rest, SECRETS)
    config = ServerConfig(data_dir=values.get("data_dir") or ServerConfig().data_dir)
    api = AdminAPI(config, values.get("server", ""))
    body = api.call("GET" if action == "status" else "POST", _PATH + action, action,
                    timeout=600)
    print(f"Encryption Status: {body.get('encryption', 'unknown').capitalize()}")
    print(f"Current Writer Key: {body.get('writer', '')}")
    print(f"Keys: {', '.join(body.get('keys') or []) or '(none)'}")
    servers = body.get("servers")
    if servers is not None:  # the other servers on a shared datastore, as K3s's status
        behind = sorted(f"{s.get('address')} ({lease}"
                        f"{'' if s.get('live') else ', Lease not renewed lately'})"
                        for lease, s in servers.items() if not s.get("same"))
        print("Server Encryption Hashes: " + (
            f"hash does not match on server(s): {', '.join(behind)}" if behind
            else "All hashes match"))
    for k in ("prepared", "reencrypted", "dropped"):
        if k in body:
            v = body[k]
            print(f"{k.capitalize()}: {', '.join(v) if isinstance(v, list) else v}")
    return 0
