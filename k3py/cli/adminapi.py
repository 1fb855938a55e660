"""Calls to the local server's API as its admin, for the subcommands that run on the server
(`secrets-encrypt`, `token create|list|delete`, as K3s's): the admin client certificate and
the server CA from <data-dir>/server/tls, JSON in and out, every failure one UsageError."""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from typing import Any

from k3py import PROGRAM
from k3py.cli.flags import UsageError
from k3py.config import ServerConfig

__all__ = ["AdminAPI"]

DEFAULT_SERVER = "https://127.0.0.1:6443"


class AdminAPI:
    def __init__(self, config: ServerConfig, server: str = "") -> None:
        self.server = (server or DEFAULT_SERVER).rstrip("/")
        tls = config.tls_dir
        cert, key = os.path.join(tls, "client-admin.crt"), os.path.join(tls, "client-admin.key")
        if not os.path.exists(cert):
            raise UsageError(f"no admin certificate in {tls}: run this on the server (as "
                             f"root), or pass its --data-dir")
        self.ctx = ssl.create_default_context(cafile=os.path.join(tls, "server-ca.crt"))
        self.ctx.check_hostname = False  # the server's CA is pinned; its name varies
        try:
            self.ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as e:
            raise UsageError(f"cannot read the admin certificate in {tls}: {e}") from None

    def call(self, method: str, path: str, what: str, body: Any = None,
             timeout: float = 60) -> dict:
        """The JSON answer to `method path`; `what` names the action in an error."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as r:
                return json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("message") or str(e)
            except ValueError:
                message = str(e)
            raise UsageError(f"the server refused {what}: {message}") from None
        except (urllib.error.URLError, OSError) as e:
            raise UsageError(f"cannot reach the server at {self.server}: "
                             f"{getattr(e, 'reason', e)}; is '{PROGRAM} server' running? "
                             f"(--server URL)") from None
