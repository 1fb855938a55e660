"""Joining: the agent checks the CA hash in the token and trades the token for a node cert;
a wrong CA or a wrong token is a JoinError at once, never a hang; a node that joined before
starts with its stored credential without the server.

The server side is k3py.server.edge.nodeauth served in-process over plain HTTP."""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from k3py.agent.join import JoinError, join, parse_token, stored
from k3py.server.edge.nodeauth import NodeJoin
from tests.unit.conftest import serve_app

pytestmark = pytest.mark.unit


def _ca() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k3py-test-ca")])
    now = _dt.datetime.now(_dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + _dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


@pytest.fixture
async def server():
    ca_pem, key_pem = _ca()
    token = f"K10{hashlib.sha256(ca_pem).hexdigest()}::server:s3cret"
    app = web.Application()
    NodeJoin(ca_cert_pem=ca_pem, ca_key_pem=key_pem, token=token).install(app)
    runner, port = await serve_app(app)
    async with aiohttp.ClientSession() as session:
        yield f"http://127.0.0.1:{port}", token, session
    await runner.cleanup()


def test_parse_token():
    h = "a" * 64
    assert parse_token(f"K10{h}::server:xyz") == (h, "xyz")
    assert parse_token("plain") == ("", "plain")
    with pytest.raises(JoinError):
        parse_token("K10abc::server:xyz")


async def test_join_issues_a_node_certificate(server, tmp_path):
    url, token, session = server
    creds = await join(session, url, token, "pi-1", str(tmp_path / "agent"))
    cert = x509.load_pem_x509_certificate(open(creds.cert_path, "rb").read())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "system:node:pi-1"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == \
        "system:nodes"
    assert (tmp_path / "agent" / "client-node.key").stat().st_mode & 0o077 == 0
    # a second start reuses the stored certificate
    again = await join(session, url, token, "pi-1", str(tmp_path / "agent"))
    assert open(again.cert_path, "rb").read() == open(creds.cert_path, "rb").read()


async def test_wrong_token_is_rejected(server, tmp_path):
    url, token, session = server
    bad = token.rsplit(":", 1)[0] + ":wrong"
    with pytest.raises(JoinError, match="rejected the join token"):
        await join(session, url, bad, "pi-1", str(tmp_path / "agent"))


async def test_wrong_ca_hash_is_rejected(server, tmp_path):
    url, _, session = server
    with pytest.raises(JoinError, match="does not match the token"):
        await join(session, url, "K10" + "0" * 64 + "::server:s3cret", "pi-1",
                   str(tmp_path / "agent"))


async def test_a_stored_credential_needs_no_server(server, tmp_path):
    """A node that joined once starts again with the server gone (an agent restarted while
    offline): its stored credential is used as it is, without a request."""
    url, token, session = server
    agent_dir = str(tmp_path / "agent")
    first = await join(session, url, token, "pi-1", agent_dir)
    kept = {p: open(p, "rb").read() for p in (first.ca_path, first.cert_path, first.key_path)}
    unreachable = "http://127.0.0.1:9"  # nothing listens: any request would be retried
    again = await asyncio.wait_for(join(session, unreachable, token, "pi-1", agent_dir), 2)
    assert again == first
    assert {p: open(p, "rb").read() for p in kept} == kept
    assert again.cluster_id() == token[3:15]  # the CA hash the token carries
    assert stored(agent_dir, "pi-1", token[3:67]) == first
    assert stored(agent_dir, "pi-1") == first  # a bare-secret token names no CA


def test_a_stored_credential_for_another_node_or_ca_is_not_used(tmp_path):
    agent_dir = tmp_path / "agent"
    assert stored(str(agent_dir), "pi-1") is None  # never joined: the server is needed
    agent_dir.mkdir()
    ca_pem, key_pem = _ca()
    (agent_dir / "server-ca.crt").write_bytes(ca_pem)
    for name, data in zip(("client-node.crt", "client-node.key"),
                          _node_cert(ca_pem, key_pem, "pi-1", days=1), strict=True):
        (agent_dir / name).write_bytes(data)
    ca_hash = hashlib.sha256(ca_pem).hexdigest()
    assert stored(str(agent_dir), "pi-1", ca_hash) is not None
    assert stored(str(agent_dir), "pi-2", ca_hash) is None
    assert stored(str(agent_dir), "pi-1", "0" * 64) is None  # the token names another CA
    (agent_dir / "client-node.crt").write_bytes(_node_cert(ca_pem, key_pem, "pi-1", days=-1)[0])
    assert stored(str(agent_dir), "pi-1", ca_hash) is None  # expired


def _node_cert(ca_pem: bytes, ca_key_pem: bytes, node: str, days: int) -> tuple[bytes, bytes]:
    """(certificate, key) of `node`, valid for `days` from now (negative: expired)."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                        f"system:node:{node}")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - _dt.timedelta(days=2))
            .not_valid_after(now + _dt.timedelta(days=days))
            .sign(ca_key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
