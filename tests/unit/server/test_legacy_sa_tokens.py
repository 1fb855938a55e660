"""Legacy service-account token Secrets: the tokens controller filling, deleting and cleaning
them up on a real Registry over SQLite (tests/unit/conftest.py), and the authenticator's
checks of such a token against its Secret and ServiceAccount."""

from __future__ import annotations

import base64

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from k3py.server.controllers.tokens import (
    NAME_ANNOTATION,
    SECRET_TYPE,
    UID_ANNOTATION,
    TokensController,
)
from k3py.server.serviceaccounts import LEGACY_ISSUER, TokenIssuer, legacy_token_user
from tests.unit.conftest import eventually

pytestmark = pytest.mark.unit

CA = "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"


def _issuer() -> TokenIssuer:
    key = ec.generate_private_key(ec.SECP256R1())
    return TokenIssuer(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))


def _token_secret(name: str, account: str, **annotations) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE,
            "metadata": {"name": name, "namespace": "default",
                         "annotations": {NAME_ANNOTATION: account, **annotations}}}


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _decoded(secret: dict) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


async def _start(env) -> TokenIssuer:
    issuer = _issuer()
    env.ctx.extra.update(service_account_issuer=issuer, root_ca_pem=CA)
    await env.start(TokensController)
    return issuer


async def _secret(env, name: str) -> dict | None:
    return await env.registry.try_get(env.res("secrets"), "default", name)


async def test_token_secret_filled_with_a_legacy_token(env):
    issuer = await _start(env)
    sa = await env.registry.create(env.res("serviceaccounts"), "default", {
        "metadata": {"name": "robot", "namespace": "default"}})
    await env.registry.create(env.res("secrets"), "default",
                              {**_token_secret("opaque", "robot"), "type": "Opaque"})
    await env.registry.create(env.res("secrets"), "default", _token_secret("robot-token", "robot"))
    secret = await eventually(lambda: _filled(env, "robot-token"), what="token filled")
    data = _decoded(secret)
    assert data["ca.crt"] == CA and data["namespace"] == "default"
    assert secret["metadata"]["annotations"][UID_ANNOTATION] == sa["metadata"]["uid"]
    claims = _claims(data["token"])
    assert claims == {
        "iss": LEGACY_ISSUER, "sub": "system:serviceaccount:default:robot",
        "kubernetes.io/serviceaccount/namespace": "default",
        "kubernetes.io/serviceaccount/secret.name": "robot-token",
        "kubernetes.io/serviceaccount/service-account.name": "robot",
        "kubernetes.io/serviceaccount/service-account.uid": sa["metadata"]["uid"]}
    assert issuer.authenticate(data["token"]) is None  # not a bound token: no aud, no exp
    opaque = await _secret(env, "opaque")
    assert opaque is not None and not opaque.get("data")  # another type: left alone


async def _filled(env, name: str) -> dict | None:
    secret = await _secret(env, name)
    return secret if secret and (secret.get("data") or {}).get("token") else None


async def test_secrets_of_missing_or_other_accounts_are_deleted(env):
    await _start(env)
    await env.registry.create(env.res("secrets"), "default", _token_secret("orphan", "nobody"))
    sa = await env.registry.create(env.res("serviceaccounts"), "default", {
        "metadata": {"name": "robot", "namespace": "default"}})
    await env.registry.create(env.res("secrets"), "default",
                              _token_secret("stale", "robot", **{UID_ANNOTATION: "old-uid"}))
    await env.registry.create(env.res("secrets"), "default", _token_secret("kept", "robot"))
    await eventually(lambda: _gone(env, "orphan"), what="orphan token secret deleted")
    await eventually(lambda: _gone(env, "stale"), what="other-uid token secret deleted")
    await eventually(lambda: _filled(env, "kept"), what="token filled")
    await env.registry.delete(env.res("serviceaccounts"), "default", "robot",
                              {"preconditions": {"uid": sa["metadata"]["uid"]}})
    await eventually(lambda: _gone(env, "kept"), what="token secret deleted with its account")


async def _gone(env, name: str) -> bool:
    return await _secret(env, name) is None


def _legacy_setup():
    issuer = _issuer()
    token = issuer.issue_legacy("ns", "robot", "uid-1", "robot-token")
    secret = {"metadata": {"name": "robot-token", "namespace": "ns"},
              "data": {"token": base64.b64encode(token.encode()).decode()}}
    account = {"metadata": {"name": "robot", "namespace": "ns", "uid": "uid-1"}}
    return issuer, token, {("ns", "robot-token"): secret}, {("ns", "robot"): account}


def _user(issuer, token, secrets, accounts):
    return legacy_token_user(issuer, token, lambda ns, n: secrets.get((ns, n)),
                             lambda ns, n: accounts.get((ns, n)))


def test_legacy_token_user_and_groups():
    issuer, token, secrets, accounts = _legacy_setup()
    user = _user(issuer, token, secrets, accounts)
    assert user is not None and user.name == "system:serviceaccount:ns:robot"
    assert set(user.groups) == {"system:serviceaccounts", "system:serviceaccounts:ns",
                                "system:authenticated"}


def test_legacy_token_refused_without_its_secret_or_account():
    issuer, token, secrets, accounts = _legacy_setup()
    assert _user(issuer, token, {}, accounts) is None  # Secret deleted
    other = {k: {**v, "data": {"token": base64.b64encode(b"x.y.z").decode()}}
             for k, v in secrets.items()}
    assert _user(issuer, token, other, accounts) is None  # Secret holds another token
    deleting = {k: {**v, "metadata": {**v["metadata"], "deletionTimestamp": "2026-01-01"}}
                for k, v in secrets.items()}
    assert _user(issuer, token, deleting, accounts) is None
    assert _user(issuer, token, secrets, {}) is None  # account deleted
    again = {k: {"metadata": {**v["metadata"], "uid": "uid-2"}} for k, v in accounts.items()}
    assert _user(issuer, token, secrets, again) is None  # account made again
    assert _user(_issuer(), token, secrets, accounts) is None  # another key
    bound, _ = issuer.issue("ns", "robot", "uid-1")
    assert _user(issuer, bound, secrets, accounts) is None  # a bound token is not legacy
    forged = token.split(".")
    forged[1] = base64.urlsafe_b64encode(orjson.dumps(
        {**_claims(token), "sub": "system:serviceaccount:ns:admin"})).decode().rstrip("=")
    assert _user(issuer, ".".join(forged), secrets, accounts) is None  # signature broken
