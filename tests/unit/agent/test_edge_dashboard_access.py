"""The edge dashboard's access rules: a token file made once with mode 0600 and kept, a cookie
that is an HMAC of it (another token, another cookie), plain HTTP on loopback only and TLS
with a certificate of its own anywhere else; its page names only its own hashed assets."""

from __future__ import annotations

import os
import re
import ssl
import stat

import pytest

from k3py.agent.dashboard.access import (
    TOKEN_FILE,
    cookie_value,
    ensure_token,
    is_loopback,
    serving_context,
)
from k3py.webui.assets import load_assets

pytestmark = pytest.mark.unit


def test_token_is_made_once_private_and_kept(tmp_path):
    token = ensure_token(str(tmp_path))
    path = tmp_path / TOKEN_FILE
    assert len(token) >= 40 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert ensure_token(str(tmp_path)) == token
    assert cookie_value(token) != cookie_value(token + "x") and token not in cookie_value(token)


def test_tls_off_loopback_only(tmp_path):
    for bind in ("127.0.0.1", "::1", "localhost"):
        assert is_loopback(bind) and serving_context(str(tmp_path), bind) is None
    assert not is_loopback("192.168.1.10")
    ctx = serving_context(str(tmp_path), "192.168.1.10")
    assert isinstance(ctx, ssl.SSLContext)
    key = tmp_path / "dashboard-tls.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    before = key.read_bytes()
    serving_context(str(tmp_path), "192.168.1.10")
    assert key.read_bytes() == before  # kept: the browser trusted it once


def test_edge_page_names_its_hashed_assets():
    assets = load_assets("k3py.agent.dashboard")
    page = assets["edge.html"].body.decode()
    edge = next(n for n in assets if re.fullmatch(r"edge\.[0-9a-f]{12}\.js", n))
    assert f'src="{edge}"' in page
    code = assets[edge].body.decode()
    for shared in ("live", "ui"):
        assert re.search(rf'"\./{shared}\.[0-9a-f]{{12}}\.js"', code), shared
