"""Joining a cluster: fetch the server CA from GET /cacerts, check it against the hash in the
K3s-style token (K10<sha256 of CA>::server:<secret>), exchange the token for a node client
certificate at POST /v1-k3py/node-cert, and keep it in <data-dir>/agent/. The request carries
this machine's node password (<data-dir>/agent/node-password, random, made once), so a second
machine cannot take a node name that is in use (k3py.server.edge.nodepassword); the agent's
tunnel sends it again on every dial (protocol.NODE_PASSWORD_HEADER).

A node that joined before starts from the credential it keeps (`stored`), without asking the
server anything: an agent restarted while the server is unreachable must run its pods from its
cache at once, and its tunnel connects when the server is back. Only a first join (or a
credential for another node name, another CA than the token's, or an expired one) needs the
server. Called once at agent start-up; JoinError is a problem the user must fix (one line,
exit 1)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import ssl
import time
from dataclasses import dataclass

import aiohttp

from k3py.hostinfo import machine_secret
from k3py.tunnel.protocol import CACERTS_PATH, NODE_CERT_PATH, NodeCertRequest, NodeCertResponse
from k3py.tunnel.reliability import Backoff

__all__ = ["JoinError", "NodeCredentials", "parse_token", "join", "stored", "ssl_context",
           "node_password"]

log = logging.getLogger("k3py.agent")


class JoinError(Exception):
    """A wrong token, a wrong CA, a rejected node: retrying will not help."""


@dataclass(frozen=True)
class NodeCredentials:
    ca_path: str
    cert_path: str
    key_path: str

    @classmethod
    def in_dir(cls, agent_dir: str) -> NodeCredentials:
        return cls(os.path.join(agent_dir, "server-ca.crt"),
                   os.path.join(agent_dir, "client-node.crt"),
                   os.path.join(agent_dir, "client-node.key"))

    def cluster_id(self) -> str:
        """The cluster this credential belongs to: the first 12 hex digits of the CA's
        sha256 (the hash a K10 token carries), so that two clusters on one host tell their
        containers apart (runtime/podman.py's LABEL_CLUSTER)."""
        with open(self.ca_path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:12]


def parse_token(token: str) -> tuple[str, str]:
    """(CA sha256 hex or "", secret). Accepts the full K10 form and a bare secret."""
    token = token.strip()
    if token.startswith("K10") and "::" in token:
        ca_hash, _, creds = token[3:].partition("::")
        secret = creds.split(":", 1)[1] if ":" in creds else creds
        if len(ca_hash) != 64 or any(ch not in "0123456789abcdef" for ch in ca_hash.lower()):
            raise JoinError("the token's CA hash is malformed (want K10<64 hex>::server:<secret>)")
        return ca_hash.lower(), secret
    return "", token


def ssl_context(creds: NodeCredentials) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=creds.ca_path)
    ctx.check_hostname = False  # the CA is pinned by hash; server names vary at the edge
    ctx.load_cert_chain(creds.cert_path, creds.key_path)
    return ctx


def node_password(agent_dir: str) -> str:
    """This machine's node password, created on first use (0600, never leaves but hashed)."""
    return machine_secret(os.path.join(agent_dir, "node-password"), 16)


def _status_message(text: str) -> str:
    """The message of a Kubernetes Status body, else the text itself (one line, short)."""
    import json
    try:
        return str(json.loads(text).get("message") or text)[:300]
    except (ValueError, AttributeError):
        return " ".join(text.split())[:200]


def _write(path: str, data: bytes, mode: int) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


async def _retrying(what: str, fn, *, attempts: int = 0):
    """Retry network failures with backoff (the server may still be starting); not HTTP errors."""
    backoff = Backoff(base=0.5, cap=10.0)
    n = 0
    while True:
        try:
            return await fn()
        except (aiohttp.ClientConnectionError, TimeoutError, OSError) as e:
            n += 1
            if attempts and n >= attempts:
                raise JoinError(f"cannot reach the server to {what}: {e}") from None
            delay = backoff.next_delay()
            log.warning("cannot reach the server to %s (%s); retrying in %.1fs", what, e, delay)
            await asyncio.sleep(delay)


def stored(agent_dir: str, node_name: str, ca_hash: str = "") -> NodeCredentials | None:
    """The credential an earlier join left in `agent_dir`, if it is for `node_name`, has not
    expired, and its CA is the one the token names (any, for a token without a CA hash);
    else None."""
    creds = NodeCredentials.in_dir(agent_dir)
    if not all(os.path.exists(p) for p in (creds.ca_path, creds.cert_path, creds.key_path)):
        return None
    subject, not_after = _cert_subject(creds.cert_path)
    if subject != node_name or not_after <= time.time():
        return None
    with open(creds.ca_path, "rb") as f:
        if ca_hash and hashlib.sha256(f.read()).hexdigest() != ca_hash:
            return None
    return creds


async def join(session: aiohttp.ClientSession, server: str, token: str, node_name: str,
               agent_dir: str) -> NodeCredentials:
    """The node's credential: the stored one when it fits (no network), else a new one from
    the server (retrying while it cannot be reached)."""
    server = server.rstrip("/")
    os.makedirs(agent_dir, mode=0o700, exist_ok=True)
    ca_hash, secret = parse_token(token) if token else ("", "")
    kept = stored(agent_dir, node_name, ca_hash)
    if kept is not None:
        log.info("node %s starts with its stored credential; its tunnel connects when %s "
                 "answers", node_name, server)
        return kept
    creds = NodeCredentials.in_dir(agent_dir)
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # verified below by the hash carried in the token

    async def fetch_ca() -> bytes:
        async with session.get(server + CACERTS_PATH, ssl=insecure,
                               timeout=aiohttp.ClientTimeout(total=15)) as r:
            if r.status != 200:
                raise JoinError(f"GET {CACERTS_PATH} on {server} returned {r.status}")
            return await r.read()
    ca_pem = await _retrying("fetch its CA", fetch_ca)
    got = hashlib.sha256(ca_pem).hexdigest()
    if ca_hash and got != ca_hash:
        raise JoinError(f"the server's CA certificate (sha256 {got[:12]}…) does not match the "
                        f"token (sha256 {ca_hash[:12]}…): wrong --token or --server")
    if not secret:
        raise JoinError("a token is required to join (--token or K3PY_TOKEN)")
    _write(creds.ca_path, ca_pem, 0o644)
    verified = ssl.create_default_context(cafile=creds.ca_path)
    verified.check_hostname = False

    password = node_password(agent_dir)

    async def fetch_cert() -> NodeCertResponse:
        async with session.post(server + NODE_CERT_PATH, ssl=verified,
                                json=NodeCertRequest(node_name, password).to_dict(),
                                headers={"Authorization": f"Bearer {token.strip()}"},
                                timeout=aiohttp.ClientTimeout(total=30)) as r:
            if r.status in (401, 403):
                raise JoinError(f"the server rejected the join token ({r.status}): check --token")
            if r.status == 409:
                raise JoinError(f"the server refused to join: "
                                f"{_status_message(await r.text())}")
            if r.status != 200:
                raise JoinError(f"POST {NODE_CERT_PATH} returned {r.status}: "
                                f"{(await r.text())[:200]}")
            return NodeCertResponse.from_dict(await r.json())
    body = await _retrying("get a node certificate", fetch_cert)
    _write(creds.key_path, body.key.encode(), 0o600)
    _write(creds.cert_path, body.cert.encode(), 0o644)
    log.info("joined %s as node %s", server, node_name)
    return creds


def _cert_subject(cert_path: str) -> tuple[str, float]:
    """(the node name in a stored certificate's CN (system:node:<name>), its notAfter as a
    Unix time); ("", 0) if unreadable.

    Read with the ssl module's own decoder: loading `cryptography` for this would cost the
    agent ~7 MB of resident memory for the rest of its life."""
    try:
        decoded = ssl._ssl._test_decode_cert(cert_path)  # type: ignore[attr-defined]
        not_after = float(ssl.cert_time_to_seconds(decoded["notAfter"]))
        for rdn in decoded.get("subject") or ():
            for key, value in rdn:
                if key == "commonName":
                    return str(value).removeprefix("system:node:"), not_after
        return "", 0.0
    except Exception:  # noqa: BLE001 - any problem: fetch a fresh one
        return "", 0.0
