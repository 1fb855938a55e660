"""Who may read the node's edge dashboard: the holder of <agent-dir>/dashboard-token (made on
first start, mode 0600, so root or the agent's user on the node), over plain HTTP only on a
loopback address and over TLS anywhere else.

The page posts the token once and gets a cookie (HttpOnly, SameSite=Strict, Secure over TLS)
whose value is an HMAC of the token: no session state, and replacing the token file logs
every browser out. A loopback port is reachable by every process of the node, pods with the
host network included, so the token is asked there too (the kubelet's unauthenticated
read-only port is what this avoids). Read by agent/dashboard/__init__.py."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import ssl

from k3py.pki import atomic_write, default_serving_cert

__all__ = ["COOKIE", "TOKEN_FILE", "cookie_value", "ensure_token", "is_loopback",
           "serving_context"]

COOKIE = "k3py-edge-dashboard"
TOKEN_FILE = "dashboard-token"
_TLS_FILES = ("dashboard-tls.crt", "dashboard-tls.key")


def is_loopback(bind: str) -> bool:
    return bind == "localhost" or ipaddress.ip_address(bind).is_loopback


def ensure_token(agent_dir: str) -> str:
    """The token in <agent_dir>/dashboard-token, made (random, 0600) when absent."""
    path = os.path.join(agent_dir, TOKEN_FILE)
    try:
        with open(path, encoding="ascii") as f:
            token = f.read().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    atomic_write(path, token.encode() + b"\n")
    return token


def cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"k3py edge dashboard session", hashlib.sha256).hexdigest()


def serving_context(agent_dir: str, bind: str) -> ssl.SSLContext | None:
    """None on loopback; elsewhere TLS with a certificate of the dashboard's own (made once,
    kept next to the token), which the browser is asked to trust on first use."""
    if is_loopback(bind):
        return None
    cert_path, key_path = (os.path.join(agent_dir, name) for name in _TLS_FILES)
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        cert, key = default_serving_cert(bind)
        atomic_write(key_path, key)
        atomic_write(cert_path, cert, 0o644)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx
