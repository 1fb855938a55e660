"""Authenticator.require (k3py/server/apiserver/auth.py), the check of the routes that
authenticate themselves (the tunnel, the dashboard, secrets-encrypt, the servers' own
endpoints): 401 without a credential it accepts, and the user left for the audit log."""

from __future__ import annotations

import contextvars

import pytest
from aiohttp.test_utils import make_mocked_request

from k3py.api import errors
from k3py.server.apiserver.auth import REQUEST_USER, Authenticator, User

pytestmark = pytest.mark.unit

ALICE = User("alice", ("dev", "system:authenticated"))


def _authenticator() -> Authenticator:
    authenticator = Authenticator()
    authenticator.add_token("alice-token", ALICE)
    return authenticator


def _require(headers: dict[str, str]) -> tuple[User | None, User | None, int | None]:
    """What require returns, what REQUEST_USER then holds, and the refusal's code; in a
    context of its own, as each request has."""
    def run() -> tuple[User | None, User | None, int | None]:
        request = make_mocked_request("GET", "/dashboard/api/session", headers=headers)
        try:
            return _authenticator().require(request), REQUEST_USER.get(), None
        except errors.StatusError as e:
            return None, REQUEST_USER.get(), e.code
    return contextvars.Context().run(run)  # a fresh one: nothing of another test's


def test_a_known_credential_is_the_requests_user_for_the_audit_log():
    assert _require({"Authorization": "Bearer alice-token"}) == (ALICE, ALICE, None)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer guessed"},
                                     {"Authorization": "Basic YWxpY2U6eA=="}])
def test_no_credential_or_a_wrong_one_is_a_401_with_no_user_recorded(headers):
    assert _require(headers) == (None, None, 401)


def test_an_address_that_sent_too_many_wrong_tokens_is_refused_even_a_right_one():
    """`require` counts wrong credentials as the API does (Authenticator.identify): after the
    limit, a bearer token from that address is a 429, the right one too, until the window
    has passed."""
    authenticator = _authenticator()

    def code(token: str) -> int | None:
        request = make_mocked_request("GET", "/dashboard/api/session",
                                      headers={"Authorization": f"Bearer {token}"})
        try:
            contextvars.Context().run(authenticator.require, request)
        except errors.StatusError as e:
            return e.code
        return None
    assert code("alice-token") is None
    assert [code("guessed") for _ in range(authenticator.failures.limit)] == \
        [401] * authenticator.failures.limit
    assert (code("guessed"), code("alice-token")) == (429, 429)
