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
        user = authenticator.authenticate(request)
        if user is None:
            raise errors.StatusError(401, "Unauthorized", "Unauthorized")
        if not user.is_admin:
            raise errors.forbidden(f'User "{user.name}" cannot manage secrets encryption')

    def answer(body: dict) -> web.Response:
        return web.json_response(body)

    async def status(request: web.Request) -> web.Response:
        try:
            admin(request)
        except errors.StatusError as e:
            return web.json_response(e.to_status(), status=e.code)
        if backend is None:
            return answer({"encryption": "disabled", "keys": [], "writer": "identity"})
        return answer(backend.keys.status())

    async def act(request: web.Request) -> web.Response:
        try:
            admin(request)
        except errors.StatusError as e:
            return web.json_response(e.to_status(), status=e.code)
        if backend is None:
            return web.json_response(errors.StatusError(
                400, "BadRequest", "secrets encryption is off on this server: start it with "
                "--secrets-encryption").to_status(), status=400)
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
                return web.json_response(errors.StatusError(
                    409, "Conflict", str(e)).to_status(), status=409)
            except EncryptionError as e:
                return web.json_response(errors.StatusError(
                    500, "InternalError", str(e)).to_status(), status=500)
        return answer({**out, **keys.status()})

    app.router.add_get(ENCRYPT_PATH + "/status", status)
    app.router.add_post(ENCRYPT_PATH + "/{action:prepare|rotate|reencrypt|rotate-keys}", act)
