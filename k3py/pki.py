"""Certificates and secrets of a k3py cluster: server and client CAs, serving and admin certs,
the ServiceAccount signing key, the join token, kubeconfig files and TLS contexts."""

# Files live in <data-dir>/server/tls with K3s's names. Two CAs, as K3s: `server-ca` signs the
# serving certificate (what agents pin through the token's CA hash and kubeconfigs trust);
# `client-ca` signs the admin and node client certificates (the identities the API server
# accepts), so a leaked client CA key cannot impersonate the server and vice versa.
# Everything is created once and kept across restarts; the serving certificate is re-issued
# with the same CA when its SANs change, and leaf certificates are renewed when fewer than
# 90 days remain. Keys are ECDSA P-256 like K3s; every write is atomic (temp + fsync +
# rename), keys 0600. Join token: `K10<sha256 hex of the server CA PEM>::server:<secret>`,
# K3s's structure (K10 prefix kept so it reads familiar; only k3py agents consume it).

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import ipaddress
import os
import secrets
import socket
import ssl
import tempfile
from dataclasses import dataclass

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Pki", "PkiError", "ensure_pki", "ensure_token", "parse_token", "token_ca_hash",
           "write_kubeconfig", "issue_client_cert", "server_ssl_context", "client_ssl_context",
           "atomic_write", "serving_sans", "default_serving_cert", "TOKEN_PREFIX"]

TOKEN_PREFIX = "K10"
CA_VALIDITY = _dt.timedelta(days=3650)
LEAF_VALIDITY = _dt.timedelta(days=365)
RENEW_BEFORE = _dt.timedelta(days=90)  # K3s renews leaf certs this long before expiry
SERVICE_DNS_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")


class PkiError(Exception):
    """The TLS directory is in a state k3py must not repair silently (e.g. a CA key is gone)."""


# ---------------------------------------------------------------- files

def atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write `path` so that a crash leaves the old or the new content, never a torn file.
    The mode is set before the rename, so a key is never readable by others."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------- certificates

def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, key_cert_sign=ca, crl_sign=ca,
                         content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, encipher_only=False,
                         decipher_only=False)


def _make_ca(cn: str) -> tuple[bytes, bytes]:
    key = _new_key()
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5)).not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(ca=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return _cert_pem(cert), _key_pem(key)


def _issue(ca_cert_pem: bytes, ca_key_pem: bytes, cn: str, orgs: tuple[str, ...] = (), *,
           server: bool = False, dns: tuple[str, ...] = (),
           ips: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise PkiError("the CA key is not an ECDSA key")
    key = _new_key()
    now = _now()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder().subject_name(_name(cn, orgs))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - _dt.timedelta(minutes=5))
               .not_valid_after(min(now + LEAF_VALIDITY, ca_cert.not_valid_after_utc))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(_key_usage(ca=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if server:
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _cert_pem(builder.sign(ca_key, hashes.SHA256())), _key_pem(key)


def default_serving_cert(cn: str) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) of a serving certificate for `cn` from a throwaway CA of its own:
    what a proxy presents when no certificate matches (as Traefik's default certificate)."""
    ca_cert, ca_key = _make_ca(f"{cn} CA")
    return _issue(ca_cert, ca_key, cn, server=True, dns=(cn,))


def _leaf_is_good(cert_pem: bytes | None, key_pem: bytes | None, ca_cert_pem: bytes) -> bool:
    """The leaf parses, matches its key, was signed by this CA and is not close to expiry."""
    if not cert_pem or not key_pem:
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca_cert_pem))
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo):
        return False
    return cert.not_valid_after_utc - _now() > RENEW_BEFORE


def _cert_sans(cert_pem: bytes) -> tuple[set[str], set[str]]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return (set(ext.get_values_for_type(x509.DNSName)),
            {str(i) for i in ext.get_values_for_type(x509.IPAddress)})


def serving_sans(sans: list[str], ips: list[str], *, service_ip: str = "10.43.0.1",
                 cluster_domain: str = "cluster.local") -> tuple[set[str], set[str]]:
    """(DNS names, IP addresses) the serving certificate must carry: this host's name, the
    `kubernetes` Service names and its ClusterIP, loopback, plus the caller's names and IPs
    (an IP given as a name, e.g. from --tls-san, counts as an IP)."""
    dns = {*SERVICE_DNS_NAMES, f"kubernetes.default.svc.{cluster_domain}",
           socket.gethostname().lower()}
    addrs = {"127.0.0.1", "::1", str(ipaddress.ip_address(service_ip))}
    for value in [*sans, *ips]:
        value = value.strip()
        if not value:
            continue
        try:
            addrs.add(str(ipaddress.ip_address(value.strip("[]"))))
        except ValueError:
            dns.add(value.lower())
    return dns, addrs


# ---------------------------------------------------------------- the bundle

@dataclass(frozen=True)
class Pki:
    """The cluster's certificates: PEM contents and the files they live in."""

    tls_dir: str
    ca_cert_pem: bytes  # server CA: signs the serving cert; served at /cacerts; in kubeconfigs
    ca_key_pem: bytes
    client_ca_cert_pem: bytes  # client CA: signs admin and node client certificates
    client_ca_key_pem: bytes
    serving_cert_pem: bytes
    serving_key_pem: bytes
    admin_cert_pem: bytes  # CN=system:admin, O=system:masters
    admin_key_pem: bytes
    sa_key_pem: bytes  # ServiceAccount token signing key (ECDSA P-256 -> ES256)
    sa_pub_pem: bytes

    def _path(self, name: str) -> str:
        return os.path.join(self.tls_dir, name)

    @property
    def ca_cert_path(self) -> str:
        return self._path("server-ca.crt")

    @property
    def ca_key_path(self) -> str:
        return self._path("server-ca.key")

    @property
    def client_ca_path(self) -> str:
        return self._path("client-ca.crt")

    @property
    def client_ca_key_path(self) -> str:
        return self._path("client-ca.key")

    @property
    def serving_cert_path(self) -> str:
        return self._path("serving-kube-apiserver.crt")

    @property
    def serving_key_path(self) -> str:
        return self._path("serving-kube-apiserver.key")

    @property
    def admin_cert_path(self) -> str:
        return self._path("client-admin.crt")

    @property
    def admin_key_path(self) -> str:
        return self._path("client-admin.key")

    @property
    def sa_key_path(self) -> str:
        return self._path("service.key")

    @property
    def sa_pub_path(self) -> str:
        return self._path("service.pub")

    def issue_client_cert(self, cn: str, orgs: tuple[str, ...] | list[str] = ()
                          ) -> tuple[bytes, bytes]:
        """A new client certificate and key (PEM) signed by the client CA, e.g. for a node:
        cn="system:node:<name>", orgs=("system:nodes",). Nothing is written to disk."""
        return _issue(self.client_ca_cert_pem, self.client_ca_key_pem, cn, tuple(orgs))


def _ensure_ca(tls_dir: str, base: str, cn: str) -> tuple[bytes, bytes]:
    cert_path = os.path.join(tls_dir, f"{base}.crt")
    key_path = os.path.join(tls_dir, f"{base}.key")
    cert, key = _read(cert_path), _read(key_path)
    if cert and key:
        try:
            x509.load_pem_x509_certificate(cert)
            serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError):
            raise PkiError(f"{cert_path} or {key_path} is corrupt; restore them from a backup, "
                           f"or delete both to create a new CA (every node must then "
                           f"rejoin)") from None
        return cert, key
    if cert or key:
        missing = key_path if cert else cert_path
        raise PkiError(f"{missing} is missing while its pair exists; restore it, or delete "
                       f"both {base}.crt and {base}.key to create a new CA (every node must "
                       f"then rejoin)")
    cert, key = _make_ca(cn)
    atomic_write(key_path, key, 0o600)
    atomic_write(cert_path, cert, 0o644)
    return cert, key


def ensure_pki(tls_dir: str, *, sans: list[str], ips: list[str],
               service_ip: str = "10.43.0.1", cluster_domain: str = "cluster.local") -> Pki:
    """Create what is missing in `tls_dir` and return the bundle; existing CAs and keys are
    kept. `sans` are extra DNS names (or IPs) such as --tls-san; `ips` are addresses such as
    the advertise address. Raises PkiError when a CA file is missing or corrupt."""
    os.makedirs(tls_dir, mode=0o700, exist_ok=True)
    stamp = int(_now().timestamp())
    ca_cert, ca_key = _ensure_ca(tls_dir, "server-ca", f"k3py-server-ca@{stamp}")
    client_ca_cert, client_ca_key = _ensure_ca(tls_dir, "client-ca", f"k3py-client-ca@{stamp}")

    dns, addrs = serving_sans(sans, ips, service_ip=service_ip, cluster_domain=cluster_domain)
    serving_cert_path = os.path.join(tls_dir, "serving-kube-apiserver.crt")
    serving_key_path = os.path.join(tls_dir, "serving-kube-apiserver.key")
    serving_cert, serving_key = _read(serving_cert_path), _read(serving_key_path)
    if not _leaf_is_good(serving_cert, serving_key, ca_cert) or \
            _cert_sans(serving_cert or b"") != (dns, addrs):
        serving_cert, serving_key = _issue(ca_cert, ca_key, "kube-apiserver", server=True,
                                           dns=tuple(sorted(dns)), ips=tuple(sorted(addrs)))
        atomic_write(serving_key_path, serving_key, 0o600)
        atomic_write(serving_cert_path, serving_cert, 0o644)

    admin_cert_path = os.path.join(tls_dir, "client-admin.crt")
    admin_key_path = os.path.join(tls_dir, "client-admin.key")
    admin_cert, admin_key = _read(admin_cert_path), _read(admin_key_path)
    if not _leaf_is_good(admin_cert, admin_key, client_ca_cert):
        admin_cert, admin_key = _issue(client_ca_cert, client_ca_key, "system:admin",
                                       ("system:masters",))
        atomic_write(admin_key_path, admin_key, 0o600)
        atomic_write(admin_cert_path, admin_cert, 0o644)

    sa_key_path = os.path.join(tls_dir, "service.key")
    sa_pub_path = os.path.join(tls_dir, "service.pub")
    sa_key = _read(sa_key_path)
    if not sa_key:
        sa_key = _key_pem(_new_key())
        atomic_write(sa_key_path, sa_key, 0o600)
    loaded = serialization.load_pem_private_key(sa_key, password=None)
    sa_pub = loaded.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    if _read(sa_pub_path) != sa_pub:
        atomic_write(sa_pub_path, sa_pub, 0o644)

    assert serving_cert and serving_key and admin_cert and admin_key
    return Pki(tls_dir=tls_dir, ca_cert_pem=ca_cert, ca_key_pem=ca_key,
               client_ca_cert_pem=client_ca_cert, client_ca_key_pem=client_ca_key,
               serving_cert_pem=serving_cert, serving_key_pem=serving_key,
               admin_cert_pem=admin_cert, admin_key_pem=admin_key,
               sa_key_pem=sa_key, sa_pub_pem=sa_pub)


def issue_client_cert(pki: Pki, cn: str, orgs: tuple[str, ...] | list[str] = ()
                      ) -> tuple[bytes, bytes]:
    """Module-level spelling of Pki.issue_client_cert."""
    return pki.issue_client_cert(cn, orgs)


# ---------------------------------------------------------------- join token

def token_ca_hash(ca_cert_pem: bytes) -> str:
    """sha256 hex of the CA bundle exactly as /cacerts serves it (the server-ca.crt bytes)."""
    return hashlib.sha256(ca_cert_pem).hexdigest()


def parse_token(token: str) -> tuple[str | None, str]:
    """(CA hash or None, secret) from `K10<hash>::<user>:<secret>`, `<user>:<secret>`
    or a bare secret."""
    token = token.strip()
    if token.startswith(TOKEN_PREFIX) and "::" in token:
        ca_hash, _, creds = token[len(TOKEN_PREFIX):].partition("::")
        return (ca_hash.lower() or None), creds.partition(":")[2] if ":" in creds else creds
    return None, token


def ensure_token(path: str, ca_cert_pem: bytes, given: str = "") -> str:
    """The server's join token, written once to `path` (mode 0600) and kept across restarts.
    `given` (from --token/--token-file) sets the secret; without it a random 32 hex secret
    is made. The CA hash follows the current CA if the CA was replaced."""
    ca_hash = token_ca_hash(ca_cert_pem)
    existing = (_read(path) or b"").decode().strip()
    secret = parse_token(given)[1] if given.strip() else ""
    if existing:
        old_hash, old_secret = parse_token(existing)
        if old_hash == ca_hash and (not secret or secret == old_secret):
            return existing
        secret = secret or old_secret
    if not secret:
        secret = secrets.token_hex(16)
    token = f"{TOKEN_PREFIX}{ca_hash}::server:{secret}"
    atomic_write(path, (token + "\n").encode(), 0o600)
    return token


# ---------------------------------------------------------------- kubeconfig

def write_kubeconfig(path: str, server_url: str, ca_pem: bytes, cert_pem: bytes,
                     key_pem: bytes, mode: int = 0o600) -> None:
    """A kubeconfig with cluster, user and context all named `default` (as K3s writes it),
    certificates embedded; parent directories are created."""
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


# ---------------------------------------------------------------- TLS contexts

def server_ssl_context(pki: Pki, client_ca: bool = True) -> ssl.SSLContext:
    """TLS 1.2+ with the serving certificate. With client_ca, client certificates are
    optional and verified against the client CA (CERT_OPTIONAL), so bearer-token and anonymous
    requests still reach the handler, which answers 401 itself."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(pki.serving_cert_path, pki.serving_key_path)
    if client_ca:
        ctx.load_verify_locations(cadata=pki.client_ca_cert_pem.decode())
        ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def client_ssl_context(ca_pem: bytes, cert: bytes | str | None = None,
                       key: bytes | str | None = None) -> ssl.SSLContext:
    """TLS 1.2+ client context trusting `ca_pem`; `cert`/`key` are PEM bytes or file paths
    of a client certificate (PEM bytes pass through a private temp dir, removed at once)."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is None or key is None:
        return ctx
    if isinstance(cert, str) and isinstance(key, str):
        ctx.load_cert_chain(cert, key)
        return ctx
    with tempfile.TemporaryDirectory(prefix="k3py-tls-") as tmp:  # mode 0700
        paths = []
        for name, value in (("tls.crt", cert), ("tls.key", key)):
            if isinstance(value, str):
                paths.append(value)
                continue
            p = os.path.join(tmp, name)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(value)
            paths.append(p)
        ctx.load_cert_chain(paths[0], paths[1])
    return ctx
