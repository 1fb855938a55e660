"""Secrets encryption on a running server (K3s's `secrets-encrypt` endpoints): status, prepare
a new key, rotate to it, re-encrypt every secret with the writing key (then drop the others),
and rotate-keys (all three at once). Admins only (system:masters); `k3py secrets-encrypt`
(k3py/cli/secrets_encrypt.py) calls them with the server's admin certificate.

    GET  /v1-k3py/encrypt/status
    POST /v1-k3py/encrypt/{prepare,rotate,reencrypt,rotate-keys}"""

from __future__ import annotations

import asyncio

from aiohttp import web

from k3py.api import errors
from k3py.server.apiserver.auth import Authenticator
from k3py.server.store.encryption import EncryptingBackend, EncryptionError

__all__ = ["install", "ENCRYPT_PATH"]

ENCRYPT_PATH = "/v1-k3py/encrypt"


def install(app: web.Application, authenticator: Authenticator,
            backend: EncryptingBackend | None) -> None:
    lock = asyncio.Lock()

    def admin(request: web.Request) -> None:
        user = authenticator.require(request)
        if not user.is_admin:
            raise errors.forbidden(f'User "{user.name}" cannot manage secrets encryption')

    def answer(body: dict) -> web.Response:
        return web.json_response(body)

    # a StatusError raised here becomes a Status body by the app's error middleware
    async def status(request: web.Request) -> web.Response:
        admin(request)
        if backend is None:
            return answer({"encryption": "disabled", "keys": [], "writer": "identity"})
        return answer(backend.keys.status())

    async def act(request: web.Request) -> web.Response:
        admin(request)
        if backend is None:
            raise errors.bad_request("secrets encryption is off on this server: start it "
                                     "with --secrets-encryption")
        what = request.match_info["action"]
        keys = backend.keys
        async with lock:  # one rotation step at a time
            try:
                out: dict = {}
                if what in ("prepare", "rotate-keys"):
                    out["prepared"] = keys.prepare()
                if what in ("rotate", "rotate-keys"):
                    out["writer"] = keys.rotate()
                if what in ("reencrypt", "rotate-keys"):
                    out["reencrypted"] = await backend.reencrypt()
                    out["dropped"] = keys.drop_old()
            except ValueError as e:
                raise errors.StatusError(409, "Conflict", str(e)) from None
            except EncryptionError as e:
                raise errors.internal_error(str(e)) from None
        return answer({**out, **keys.status()})

    app.router.add_get(ENCRYPT_PATH + "/status", status)
    app.router.add_post(ENCRYPT_PATH + "/{action:prepare|rotate|reencrypt|rotate-keys}", act)
