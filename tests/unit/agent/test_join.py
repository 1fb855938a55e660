"""Joining: the agent checks the CA hash in the token and trades the token for a node cert;
a wrong CA or a wrong token is a JoinError at once, never a hang.

The server side is k3py.server.edge.nodeauth served in-process over plain HTTP."""

from __future__ import annotations

import datetime as _dt
import hashlib

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from k3py.agent.join import JoinError, join, parse_token
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
