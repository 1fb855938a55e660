"""Node joining on the server: GET /cacerts (unauthenticated, like K3s) and
POST /v1-k3py/node-cert, which trades the join token for a node client certificate. The
token is the server's, or a bootstrap token (`k3py token create`, k3py.api.bootstraptoken)
whose Secret exists, is for authentication and has not expired.

Installed by bootstrap.install_routes; the certificate (CN=system:node:<name>,
O=system:nodes) then authenticates the node's tunnel and API calls through TLS. A node name
belongs to the machine that first used it (nodepassword.py, as K3s's node password)."""

from __future__ import annotations

import datetime as _dt
import hmac
import logging
import re

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from k3py.api import bootstraptoken, errors
from k3py.server.edge.nodepassword import NodePasswords, verifier_key
from k3py.server.registry import Registry
from k3py.tunnel.protocol import CACERTS_PATH, NODE_CERT_PATH, NodeCertRequest, NodeCertResponse

__all__ = ["NodeJoin", "token_secret"]

log = logging.getLogger("k3py.nodeauth")

_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def token_secret(token: str) -> str:
    """The secret part of K10<hash>::<user>:<secret>; a bare token is its own secret."""
    token = token.strip()
    if token.startswith("K10") and "::" in token:
        creds = token.split("::", 1)[1]
        return creds.split(":", 1)[1] if ":" in creds else creds
    return token


class NodeJoin:
    def __init__(self, *, ca_cert_pem: bytes, ca_key_pem: bytes, token: str,
                 valid_days: int = 365, served_ca_pem: bytes | None = None,
                 passwords: NodePasswords | None = None,
                 registry: Registry | None = None) -> None:
        """`ca_*`: the CA the API server trusts for client certificates (signs node certs);
        `served_ca_pem`: what /cacerts returns (the CA of the serving cert), if different;
        `registry`: where bootstrap tokens are looked up (None: only the server's token)."""
        self.ca_cert_pem = served_ca_pem or ca_cert_pem
        self._ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
        self._ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
        self._secret = token_secret(token)
        self.valid_days = valid_days
        self.passwords = passwords  # None: no registry (unit tests), names are not guarded
        self.registry = registry

    def install(self, app: web.Application) -> None:
        app.router.add_get(CACERTS_PATH, self.cacerts)
        app.router.add_post(NODE_CERT_PATH, self.node_cert)

    async def cacerts(self, request: web.Request) -> web.Response:
        return web.Response(body=self.ca_cert_pem, content_type="application/x-pem-file")

    async def _token_ok(self, request: web.Request) -> bool:
        given = self._given_secret(request)
        if given is None:
            return False
        if self._secret and hmac.compare_digest(given.encode(), self._secret.encode()):
            return True
        if self.registry is None or bootstraptoken.parse(given) is None:
            return False
        token_id = given.partition(".")[0]
        stored = await self.registry.try_get(self.registry.served("", "secrets"),
                                             bootstraptoken.NAMESPACE,
                                             bootstraptoken.secret_name(token_id))
        why = bootstraptoken.join_refusal(stored, given, _dt.datetime.now(_dt.UTC))
        if why:
            log.warning("node join from %s refused: %s", request.remote, why)
        return not why

    @staticmethod
    def _given_secret(request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            given = token_secret(auth[7:])
        elif auth[:6].lower() == "basic ":
            import base64
            try:
                given = base64.b64decode(auth[6:]).decode().split(":", 1)[1]
            except (ValueError, IndexError):
                return None
            given = token_secret(given)
        else:
            return None
        return given

    async def node_cert(self, request: web.Request) -> web.Response:
        if not await self._token_ok(request):
            log.warning("node join with a wrong token from %s", request.remote)
            return _status(errors.unauthorized("invalid join token"))
        try:
            body = NodeCertRequest.from_dict(await request.json())
            node, password = body.node_name, body.node_password
        except (ValueError, KeyError, TypeError, AttributeError):
            return _status(errors.bad_request('body must be {"nodeName": "<name>", '
                                              '"nodePassword": "<secret>"}'))
        if not _NODE_NAME.match(node):
            return _status(errors.bad_request(f"invalid node name {node!r}"))
        if self.passwords is not None:
            try:
                await self.passwords.claim(node, password)
            except errors.StatusError as e:
                if e.code == 409:
                    log.warning("node join from %s refused: %s", request.remote, e.message)
                return _status(e)
        cert_pem, key_pem = self.issue(node)
        log.info("issued a client certificate to node %s", node)
        return web.json_response(NodeCertResponse(cert_pem.decode(), key_pem.decode(),
                                                  self.ca_cert_pem.decode()).to_dict())

    def issue(self, node: str) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _dt.datetime.now(_dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                             x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}")])
        cert = (x509.CertificateBuilder()
                .subject_name(subject).issuer_name(self._ca_cert.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - _dt.timedelta(minutes=5))
                .not_valid_after(now + _dt.timedelta(days=self.valid_days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .sign(self._ca_key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _status(e: errors.StatusError) -> web.Response:
    return web.json_response(e.to_status(), status=e.code)


def _read_first(directory: str, names: tuple[str, ...]) -> tuple[bytes, str] | None:
    import os
    for name in names:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                return f.read(), name
    return None


def install_from_config(app: web.Application, config, registry=None) -> NodeJoin | None:
    """Wire the join routes from the server's TLS dir and token file (written by k3py.pki):
    node certs are signed by the client CA, /cacerts serves the server (serving) CA."""
    signer = None
    for base in ("client-ca", "ca", "server-ca"):
        cert = _read_first(config.tls_dir, (f"{base}.crt", f"{base}.pem"))
        key = _read_first(config.tls_dir, (f"{base}.key", f"{base}-key.pem"))
        if cert and key:
            signer = (cert[0], key[0])
            break
    served = _read_first(config.tls_dir, ("server-ca.crt", "ca.crt", "server-ca.pem",
                                          "ca.pem"))
    if signer is None or served is None:
        log.warning("no CA certificate/key in %s: agents cannot join", config.tls_dir)
        return None
    with open(config.token_path) as f:
        token = f.read().strip()
    join = NodeJoin(ca_cert_pem=signer[0], ca_key_pem=signer[1], token=token,
                    served_ca_pem=served[0],
                    passwords=NodePasswords(registry, verifier_key(signer[1]))
                    if registry is not None else None,
                    registry=registry)
    join.install(app)
    return join
