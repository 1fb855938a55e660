"""Bootstrap tokens (api/bootstraptoken.py): the token format, the Secret `k3py token create`
writes, and why a token may not join (unknown, wrong secret, not for authentication,
expired)."""

from __future__ import annotations

import base64
import datetime as _dt

import pytest

from k3py.api import bootstraptoken

pytestmark = pytest.mark.unit

NOW = _dt.datetime(2026, 12, 6, 12, 0, tzinfo=_dt.UTC)


def _stored(secret: dict) -> dict:
    """The Secret as the store keeps it: stringData folded into base64 data."""
    data = {k: base64.b64encode(v.encode()).decode() for k, v in secret["stringData"].items()}
    return {**{k: v for k, v in secret.items() if k != "stringData"}, "data": data}


def test_new_tokens_parse_and_others_do_not():
    token = bootstraptoken.new_token()
    assert bootstraptoken.parse(token) == tuple(token.split("."))
    for bad in ("abc.0123456789abcdef", "ABCDEF.0123456789abcdef", "abcdef0123456789abcdef",
                "server:secret", ""):
        assert bootstraptoken.parse(bad) is None, bad


def test_the_secret_and_who_may_join_with_it():
    secret = bootstraptoken.token_secret("abcdef.0123456789abcdef", 3600, "rack", NOW)
    assert secret["metadata"] == {"name": "bootstrap-token-abcdef", "namespace": "kube-system"}
    assert secret["type"] == "bootstrap.kubernetes.io/token"
    assert secret["stringData"]["expiration"] == "2026-12-06T13:00:00Z"
    stored = _stored(secret)
    ok = bootstraptoken.join_refusal
    assert ok(stored, "abcdef.0123456789abcdef", NOW) == ""
    assert ok(stored, "abcdef.0123456789abcdee", NOW) == "no such bootstrap token"
    assert ok(None, "abcdef.0123456789abcdef", NOW) == "no such bootstrap token"
    assert "expired at 2026-12-06T13:00:00Z" in ok(stored, "abcdef.0123456789abcdef",
                                                     NOW + _dt.timedelta(hours=2))
    signing_only = _stored({**secret, "stringData": {
        **secret["stringData"], "usage-bootstrap-authentication": "false"}})
    assert "not for authentication" in ok(signing_only, "abcdef.0123456789abcdef", NOW)
    forever = bootstraptoken.token_secret("abcdef.0123456789abcdef", 0, "", NOW)
    assert "expiration" not in forever["stringData"]
    assert ok(_stored(forever), "abcdef.0123456789abcdef", NOW + _dt.timedelta(days=900)) == ""


def test_bearer_groups_as_upstream_bootstrap_authenticator():
    secret = bootstraptoken.token_secret("abcdef.0123456789abcdef", 3600, "", NOW)
    groups = bootstraptoken.bearer_groups
    token = "abcdef.0123456789abcdef"
    assert groups(_stored(secret), token, NOW) == ["system:bootstrappers"]
    extra = {**secret, "stringData": {**secret["stringData"], "auth-extra-groups":
                                      "system:bootstrappers:a, system:bootstrappers:a,"}}
    assert groups(_stored(extra), token, NOW) == ["system:bootstrappers",
                                                  "system:bootstrappers:a"]
    for bad in ("system:masters", "system:bootstrappers:", "system:bootstrappers:A"):
        wrong = {**secret, "stringData": {**secret["stringData"], "auth-extra-groups": bad}}
        assert groups(_stored(wrong), token, NOW) is None, bad
    deleting = _stored(secret)
    deleting["metadata"] = {**deleting["metadata"], "deletionTimestamp": "2026-12-06T12:00:00Z"}
    assert groups(deleting, token, NOW) is None
    assert groups(_stored(secret), "abcdef.0123456789abcdee", NOW) is None
    assert groups(_stored(secret), token, NOW + _dt.timedelta(hours=2)) is None
