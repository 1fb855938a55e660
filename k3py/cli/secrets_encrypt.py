"""`k3py secrets-encrypt status|prepare|rotate|reencrypt|rotate-keys [--data-dir DIR]
[--server URL]`, as K3s's: asks the running server (its admin certificate and CA from
<data-dir>/server/tls) to show or rotate the keys that encrypt Secrets at rest."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request

from k3py import PROGRAM
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
    server = (values.get("server") or "https://127.0.0.1:6443").rstrip("/")
    tls = config.tls_dir
    cert, key = os.path.join(tls, "client-admin.crt"), os.path.join(tls, "client-admin.key")
    ca = os.path.join(tls, "server-ca.crt")
    if not os.path.exists(cert):
        raise UsageError(f"no admin certificate in {tls}: run this on the server (as root), "
                         f"or pass its --data-dir")
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False  # the server's CA is pinned; its name varies
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"cannot read the admin certificate in {tls}: {e}") from None
    req = urllib.request.Request(server + _PATH + action,
                                 method="GET" if action == "status" else "POST")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=600) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("message") or str(e)
        except ValueError:
            message = str(e)
        raise UsageError(f"the server refused {action}: {message}") from None
    except (urllib.error.URLError, OSError) as e:
        raise UsageError(f"cannot reach the server at {server}: "
                         f"{getattr(e, 'reason', e)}; is '{PROGRAM} server' running? "
                         f"(--server URL)") from None
    print(f"Encryption Status: {body.get('encryption', 'unknown').capitalize()}")
    print(f"Current Writer Key: {body.get('writer', '')}")
    print(f"Keys: {', '.join(body.get('keys') or []) or '(none)'}")
    for k in ("prepared", "reencrypted", "dropped"):
        if k in body:
            v = body[k]
            print(f"{k.capitalize()}: {', '.join(v) if isinstance(v, list) else v}")
    return 0
