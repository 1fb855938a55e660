"""Certificates and secrets of a k3py cluster: the server CA and client CA (as K3s: server-ca,
client-ca), the serving certificate, the admin client certificate, the service-account signing
key, the join token, kubeconfig files and TLS contexts. Files live in <data-dir>/server/tls.

Everything is created once and kept across restarts; the serving certificate is re-issued
(same CA) when its SANs change. Keys are ECDSA P-256 like K3s; writes are atomic, keys 0600."""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import ipaddress
import os
import secrets
import ssl
import tempfile
from dataclasses import dataclass

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Pki", "ensure_pki", "ensure_token", "parse_token", "token_ca_hash",
           "write_kubeconfig", "issue_client_cert", "server_ssl_context", "client_ssl_context",
           "atomic_write"]

_TEN_YEARS = _dt.timedelta(days=3650)
_ONE_YEAR = _dt.timedelta(days=365)
SERVICE_SANS = ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local", "localhost")


def atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _make_ca(cn: str) -> tuple[bytes, bytes]:
    key = _new_key()
    now = _dt.datetime.now(_dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + _TEN_YEARS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return _cert_pem(cert), _key_pem(key)


def _issue(ca_cert_pem: bytes, ca_key_pem: bytes, cn: str, orgs: tuple[str, ...] = (), *,
           server: bool = False, dns: tuple[str, ...] = (),
           ips: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = _new_key()
    now = _dt.datetime.now(_dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(cn, orgs))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - _dt.timedelta(minutes=5))
               .not_valid_after(now + _ONE_YEAR)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.SERVER_AUTH] if server
                   else [ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return _cert_pem(cert), _key_pem(key)


@dataclass(frozen=True)
class Pki:
    tls_dir: str
    ca_cert_pem: bytes  # server CA: signs the serving certificate; what /cacerts serves
    ca_key_pem: bytes
    client_ca_cert_pem: bytes  # client CA: signs admin and node client certificates
    client_ca_key_pem: bytes
    serving_cert_path: str
    serving_key_path: str
    admin_cert_pem: bytes
    admin_key_pem: bytes
    sa_key_pem: bytes
    sa_pub_pem: bytes

    @property
    def client_ca_path(self) -> str:
        return os.path.join(self.tls_dir, "client-ca.crt")

    def issue_client_cert(self, cn: str, orgs: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
        return _issue(self.client_ca_cert_pem, self.client_ca_key_pem, cn, orgs)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _ensure_ca(tls_dir: str, base: str, cn: str) -> tuple[bytes, bytes]:
    cert_path, key_path = os.path.join(tls_dir, f"{base}.crt"), os.path.join(tls_dir, f"{base}.key")
    cert, key = _read(cert_path), _read(key_path)
    if cert and key:
        return cert, key
    cert, key = _make_ca(cn)
    atomic_write(key_path, key, 0o600)
    atomic_write(cert_path, cert, 0o644)
    return cert, key


def _cert_sans(cert_pem: bytes) -> tuple[set[str], set[str]]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return (set(ext.get_values_for_type(x509.DNSName)),
            {str(i) for i in ext.get_values_for_type(x509.IPAddress)})


def ensure_pki(tls_dir: str, *, sans: list[str], ips: list[str],
               service_ip: str = "10.43.0.1") -> Pki:
    os.makedirs(tls_dir, mode=0o700, exist_ok=True)
    now = int(_dt.datetime.now(_dt.UTC).timestamp())
    ca_cert, ca_key = _ensure_ca(tls_dir, "server-ca", f"k3py-server-ca@{now}")
    client_cert, client_key = _ensure_ca(tls_dir, "client-ca", f"k3py-client-ca@{now}")

    dns, addrs = set(SERVICE_SANS), {"127.0.0.1", "::1", service_ip}
    for s in sans:
        try:
            addrs.add(str(ipaddress.ip_address(s)))
        except ValueError:
            if s:
                dns.add(s.lower())
    for i in ips:
        if i:
            addrs.add(str(ipaddress.ip_address(i)))
    serving_cert = os.path.join(tls_dir, "serving-kube-apiserver.crt")
    serving_key = os.path.join(tls_dir, "serving-kube-apiserver.key")
    existing = _read(serving_cert)
    if existing is None or _read(serving_key) is None or \
            _cert_sans(existing) != (dns, addrs) and not _covers(existing, dns, addrs):
        cert, key = _issue(ca_cert, ca_key, "kube-apiserver", server=True,
                           dns=tuple(sorted(dns)), ips=tuple(sorted(addrs)))
        atomic_write(serving_key, key, 0o600)
        atomic_write(serving_cert, cert, 0o644)

    admin_cert_path = os.path.join(tls_dir, "client-admin.crt")
    admin_key_path = os.path.join(tls_dir, "client-admin.key")
    admin_cert, admin_key = _read(admin_cert_path), _read(admin_key_path)
    if not admin_cert or not admin_key:
        admin_cert, admin_key = _issue(client_cert, client_key, "system:admin",
                                       ("system:masters",))
        atomic_write(admin_key_path, admin_key, 0o600)
        atomic_write(admin_cert_path, admin_cert, 0o644)

    sa_key_path, sa_pub_path = os.path.join(tls_dir, "service.key"), os.path.join(
        tls_dir, "service.pub")
    sa_key, sa_pub = _read(sa_key_path), _read(sa_pub_path)
    if not sa_key or not sa_pub:
        k = _new_key()
        sa_key = _key_pem(k)
        sa_pub = k.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        atomic_write(sa_key_path, sa_key, 0o600)
        atomic_write(sa_pub_path, sa_pub, 0o644)
    return Pki(tls_dir=tls_dir, ca_cert_pem=ca_cert, ca_key_pem=ca_key,
               client_ca_cert_pem=client_cert, client_ca_key_pem=client_key,
               serving_cert_path=serving_cert, serving_key_path=serving_key,
               admin_cert_pem=admin_cert, admin_key_pem=admin_key,
               sa_key_pem=sa_key, sa_pub_pem=sa_pub)


def _covers(cert_pem: bytes, dns: set[str], addrs: set[str]) -> bool:
    have_dns, have_ips = _cert_sans(cert_pem)
    return dns <= have_dns and addrs <= have_ips


def issue_client_cert(pki: Pki, cn: str, orgs: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    return pki.issue_client_cert(cn, orgs)


def token_ca_hash(ca_cert_pem: bytes) -> str:
    return hashlib.sha256(ca_cert_pem).hexdigest()


def ensure_token(path: str, ca_cert_pem: bytes, given: str = "") -> str:
    """The join token `K10<sha256 of the server CA PEM>::server:<secret>` (K3s's format).
    A token given by flag sets the secret on first start; the file then keeps it."""
    existing = _read(path)
    if existing:
        token = existing.decode().strip()
        if not given or parse_token(given)[1] == parse_token(token)[1]:
            return token
    secret = parse_token(given)[1] if given else secrets.token_hex(16)
    token = f"K10{token_ca_hash(ca_cert_pem)}::server:{secret}"
    atomic_write(path, (token + "\n").encode(), 0o600)
    return token


def parse_token(token: str) -> tuple[str | None, str]:
    """(CA hash or None, secret) from the full K10 form, `user:secret`, or a bare secret."""
    token = token.strip()
    if token.startswith("K10") and "::" in token:
        ca_hash, _, creds = token[3:].partition("::")
        return ca_hash or None, creds.split(":", 1)[1] if ":" in creds else creds
    return None, token


def write_kubeconfig(path: str, server_url: str, ca_pem: bytes, cert_pem: bytes,
                     key_pem: bytes, mode: int = 0o600) -> None:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()
    doc = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "default", "cluster": {
            "server": server_url, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": "default", "user": {
            "client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "current-context": "default",
    }
    atomic_write(path, yaml.safe_dump(doc, sort_keys=False).encode(), mode)


def server_ssl_context(pki: Pki) -> ssl.SSLContext:
    """TLS 1.2+; client certificates optional (verified against the client CA) so bearer
    tokens and anonymous requests still reach the handler, which answers 401 itself."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(pki.serving_cert_path, pki.serving_key_path)
    ctx.load_verify_locations(cadata=pki.client_ca_cert_pem.decode())
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def client_ssl_context(ca_pem: bytes, cert_path: str | None = None,
                       key_path: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_path and key_path:
        ctx.load_cert_chain(cert_path, key_path)
    return ctx
