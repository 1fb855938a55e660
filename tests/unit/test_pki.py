"""k3py.pki: CAs and leaf certificates on disk, SANs, restart keeps everything, join token
format, kubeconfig read by the official `kubernetes` client, and real TLS handshakes."""

from __future__ import annotations

import http.server
import ipaddress
import json
import os
import socket
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from k3py import pki

pytestmark = pytest.mark.unit


def load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def sans_of(pem: bytes) -> tuple[set[str], set[str]]:
    ext = load(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (set(ext.get_values_for_type(x509.DNSName)),
            {str(i) for i in ext.get_values_for_type(x509.IPAddress)})


def mode_of(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def tls_dir(tmp_path):
    return str(tmp_path / "server" / "tls")


@pytest.fixture
def bundle(tls_dir):
    return pki.ensure_pki(tls_dir, sans=["k3py.example.com", "192.0.2.7"], ips=["192.0.2.10"])


def test_files_exist_with_private_keys_0600(bundle, tls_dir):
    for path in (bundle.ca_key_path, bundle.client_ca_key_path, bundle.serving_key_path,
                 bundle.admin_key_path, bundle.sa_key_path):
        assert mode_of(path) == 0o600, path
    for path in (bundle.ca_cert_path, bundle.client_ca_path, bundle.serving_cert_path,
                 bundle.admin_cert_path, bundle.sa_pub_path):
        assert os.path.isfile(path), path
    assert mode_of(tls_dir) == 0o700
    with open(bundle.ca_cert_path, "rb") as f:
        assert f.read() == bundle.ca_cert_pem
    assert not [n for n in os.listdir(tls_dir) if n.startswith(".")]  # no temp files left


def test_serving_cert_sans_and_chain(bundle):
    dns, ips = sans_of(bundle.serving_cert_pem)
    assert {"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local", socket.gethostname().lower(),
            "k3py.example.com"} <= dns
    assert {"127.0.0.1", "::1", "10.43.0.1", "192.0.2.7", "192.0.2.10"} <= ips
    serving = load(bundle.serving_cert_pem)
    serving.verify_directly_issued_by(load(bundle.ca_cert_pem))
    ca = load(bundle.ca_cert_pem)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.public_key().curve.name == "secp256r1"
    assert bundle.ca_cert_pem != bundle.client_ca_cert_pem  # two CAs, as K3s


def test_admin_and_node_client_certs_verify_against_client_ca(bundle):
    admin = load(bundle.admin_cert_pem)
    admin.verify_directly_issued_by(load(bundle.client_ca_cert_pem))
    assert admin.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:admin"
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == \
        "system:masters"
    cert_pem, key_pem = bundle.issue_client_cert("system:node:pi-1", ("system:nodes",))
    node = load(cert_pem)
    node.verify_directly_issued_by(load(bundle.client_ca_cert_pem))
    assert node.subject.rfc4514_string() == "CN=system:node:pi-1,O=system:nodes"
    assert b"PRIVATE KEY" in key_pem
    assert pki.issue_client_cert(bundle, "x", ["g"])[0] != cert_pem


def test_restart_keeps_every_file(bundle, tls_dir):
    before = {n: open(os.path.join(tls_dir, n), "rb").read() for n in os.listdir(tls_dir)}
    again = pki.ensure_pki(tls_dir, sans=["k3py.example.com", "192.0.2.7"], ips=["192.0.2.10"])
    after = {n: open(os.path.join(tls_dir, n), "rb").read() for n in os.listdir(tls_dir)}
    assert before == after
    assert again == bundle


def test_changed_sans_reissue_serving_cert_with_same_ca(bundle, tls_dir):
    again = pki.ensure_pki(tls_dir, sans=["other.example.com"], ips=["2001:db8::1"])
    assert again.ca_cert_pem == bundle.ca_cert_pem
    assert again.admin_cert_pem == bundle.admin_cert_pem
    assert again.sa_key_pem == bundle.sa_key_pem
    assert again.serving_cert_pem != bundle.serving_cert_pem
    dns, ips = sans_of(again.serving_cert_pem)
    assert "other.example.com" in dns and "k3py.example.com" not in dns
    assert "2001:db8::1" in ips and "192.0.2.7" not in ips
    load(again.serving_cert_pem).verify_directly_issued_by(load(bundle.ca_cert_pem))


def test_service_ip_and_cluster_domain(tls_dir):
    b = pki.ensure_pki(tls_dir, sans=[], ips=[], service_ip="10.96.0.1",
                       cluster_domain="edge.local")
    dns, ips = sans_of(b.serving_cert_pem)
    assert "10.96.0.1" in ips and "kubernetes.default.svc.edge.local" in dns


def test_leaf_certs_renewed_before_expiry_ca_kept(bundle, tls_dir, monkeypatch):
    monkeypatch.setattr(pki, "RENEW_BEFORE", pki.LEAF_VALIDITY * 2)
    again = pki.ensure_pki(tls_dir, sans=["k3py.example.com", "192.0.2.7"], ips=["192.0.2.10"])
    assert again.ca_cert_pem == bundle.ca_cert_pem
    assert again.serving_cert_pem != bundle.serving_cert_pem
    assert again.admin_cert_pem != bundle.admin_cert_pem


def test_missing_ca_key_is_an_error_not_a_new_ca(bundle, tls_dir):
    os.unlink(bundle.ca_key_path)
    with pytest.raises(pki.PkiError, match="server-ca.key is missing"):
        pki.ensure_pki(tls_dir, sans=[], ips=[])


def test_sa_key_pair(bundle):
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(bundle.sa_key_pem, password=None)
    pub = serialization.load_pem_public_key(bundle.sa_pub_pem)
    assert key.public_key().public_numbers() == pub.public_numbers()


# ---------------------------------------------------------------- token

def test_token_format_round_trip_and_persisted(bundle, tmp_path):
    path = str(tmp_path / "server" / "token")
    token = pki.ensure_token(path, bundle.ca_cert_pem)
    ca_hash, secret = pki.parse_token(token)
    assert token == f"K10{ca_hash}::server:{secret}"
    assert ca_hash == pki.token_ca_hash(bundle.ca_cert_pem) and len(ca_hash) == 64
    assert len(secret) == 32 and int(secret, 16) >= 0
    assert mode_of(path) == 0o600
    assert pki.ensure_token(path, bundle.ca_cert_pem) == token
    assert open(path).read().strip() == token


def test_given_token_sets_the_secret(bundle, tmp_path):
    path = str(tmp_path / "token")
    token = pki.ensure_token(path, bundle.ca_cert_pem, given="my-shared-secret")
    assert pki.parse_token(token)[1] == "my-shared-secret"
    assert pki.ensure_token(path, bundle.ca_cert_pem) == token
    assert pki.ensure_token(path, bundle.ca_cert_pem, given=token) == token


def test_new_ca_keeps_secret_and_updates_hash(bundle, tmp_path):
    path = str(tmp_path / "token")
    token = pki.ensure_token(path, bundle.ca_cert_pem)
    other_ca, _ = pki._make_ca("other")
    moved = pki.ensure_token(path, other_ca)
    assert pki.parse_token(moved) == (pki.token_ca_hash(other_ca), pki.parse_token(token)[1])


@pytest.mark.parametrize("token,expected", [
    ("K10abc::server:s3cret", ("abc", "s3cret")),
    ("K10ABC::node:s3cret", ("abc", "s3cret")),
    ("K10abc::s3cret", ("abc", "s3cret")),
    ("server:s3cret", (None, "server:s3cret")),
    ("  plain\n", (None, "plain")),
])
def test_parse_token_forms(token, expected):
    assert pki.parse_token(token) == expected


# ---------------------------------------------------------------- kubeconfig and TLS

def test_kubeconfig_written_atomically_with_mode(bundle, tmp_path):
    path = tmp_path / "etc" / "k3py" / "k3py.yaml"
    pki.write_kubeconfig(str(path), "https://127.0.0.1:6443", bundle.ca_cert_pem,
                         bundle.admin_cert_pem, bundle.admin_key_pem, mode=0o644)
    assert mode_of(str(path)) == 0o644
    pki.write_kubeconfig(str(path), "https://127.0.0.1:6443", bundle.ca_cert_pem,
                         bundle.admin_cert_pem, bundle.admin_key_pem)
    assert mode_of(str(path)) == 0o600
    assert os.listdir(path.parent) == ["k3py.yaml"]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's spelling
        cert = self.connection.getpeercert()
        subject = dict(x[0] for x in cert["subject"]) if cert else {}
        info = dict.fromkeys(("buildDate", "compiler", "gitCommit", "gitTreeState",
                              "goVersion"), "")
        info.update(major="1", minor="31", gitVersion="v1.31.0-k3py",
                    platform=subject.get("commonName", "anonymous"))
        body = json.dumps(info).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def https_server(bundle):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    ctx = pki.server_ssl_context(bundle)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_kubeconfig_works_with_kubernetes_client(bundle, tmp_path, https_server):
    kubernetes = pytest.importorskip("kubernetes")
    path = tmp_path / "kubeconfig.yaml"
    url = https_server.replace("127.0.0.1", "localhost")  # a DNS SAN, checked by the client
    pki.write_kubeconfig(str(path), url, bundle.ca_cert_pem, bundle.admin_cert_pem,
                         bundle.admin_key_pem)
    cfg = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(path), client_configuration=cfg)
    assert cfg.host == url and cfg.verify_ssl
    with kubernetes.client.ApiClient(cfg) as api:
        info = kubernetes.client.VersionApi(api).get_code()
    assert info.git_version == "v1.31.0-k3py"
    assert info.platform == "system:admin"  # the server saw the verified client cert


def _get(url: str, ctx: ssl.SSLContext) -> dict:
    import urllib.request
    with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
        return json.loads(r.read())


def test_client_cert_optional(bundle, https_server):
    anonymous = pki.client_ssl_context(bundle.ca_cert_pem)
    assert _get(https_server, anonymous)["platform"] == "anonymous"
    cert, key = bundle.issue_client_cert("system:node:pi-1", ("system:nodes",))
    node = pki.client_ssl_context(bundle.ca_cert_pem, cert, key)
    assert _get(https_server, node)["platform"] == "system:node:pi-1"
    by_path = pki.client_ssl_context(bundle.ca_cert_pem, bundle.admin_cert_path,
                                     bundle.admin_key_path)
    assert _get(https_server, by_path)["platform"] == "system:admin"
    assert anonymous.minimum_version == ssl.TLSVersion.TLSv1_2


def test_client_trusting_another_ca_is_refused(bundle, https_server):
    other_ca, _ = pki._make_ca("other")
    with pytest.raises(OSError):
        _get(https_server, pki.client_ssl_context(other_ca))


def test_serving_sans_treats_ips_in_names_as_ips():
    dns, ips = pki.serving_sans(["[2001:db8::5]", "Node.Example"], ["", "192.0.2.1"])
    assert "2001:db8::5" in ips and "192.0.2.1" in ips and "node.example" in dns
    assert all(ipaddress.ip_address(i) for i in ips)
