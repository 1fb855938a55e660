"""Service-account tokens: signed JWTs issued through serviceaccounts/<name>/token
(TokenRequest) and verified by the API server's bearer-token authenticator; legacy tokens
(no expiry) are minted into service-account-token Secrets by the tokens controller
(k3py.server.controllers.tokens) and accepted while that Secret and its account live.

The signing key pair is the server's sa.key/sa.pub from k3py.pki; tokens carry the upstream
claims so in-cluster clients (load_incluster_config) and tools that decode them work."""

from __future__ import annotations

import asyncio
import base64
import hmac
import random
import time
from collections.abc import Callable

import orjson
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from k3py.api import errors
from k3py.api.objects import now_rfc3339
from k3py.server.apiserver.auth import User
from k3py.server.apiserver.negotiation import decode_body, json_response
from k3py.server.apiserver.paths import ResourcePath
from k3py.server.registry import Registry

__all__ = ["TokenIssuer", "token_request_handler", "DEFAULT_ISSUER", "SA_MOUNT_PATH",
           "TOKEN_VOLUME_PREFIX", "mount_service_account_token", "ServiceAccountAdmission",
           "bound_pod_of", "LEGACY_ISSUER", "legacy_token_user"]

DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_AUDIENCES = (DEFAULT_ISSUER, "k3s")
# upstream's legacy (Secret-based) token: its own issuer and flat claims under this prefix
LEGACY_ISSUER = "kubernetes/serviceaccount"
_LEGACY_CLAIM = "kubernetes.io/serviceaccount/"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


class TokenIssuer:
    def __init__(self, private_key_pem: bytes, issuer: str = DEFAULT_ISSUER) -> None:
        # (namespace, pod name, pod uid) -> False once that pod is gone, None if unknown;
        # set by CloudHub's pod-token plumbing (k3py.server.edge.podtokens)
        self.pod_alive: Callable[[str, str, str], bool | None] | None = None
        # (namespace, account name) -> the ServiceAccount's uid, "" once it is gone, None if
        # unknown (the cache not synced yet); set with pod_alive
        self.account_uid: Callable[[str, str], str | None] | None = None
        self._key = serialization.load_pem_private_key(private_key_pem, password=None)
        self._pub = self._key.public_key()
        self.issuer = issuer
        if isinstance(self._key, ec.EllipticCurvePrivateKey):
            self.alg = "ES256"
        elif isinstance(self._key, rsa.RSAPrivateKey):
            self.alg = "RS256"
        else:  # pragma: no cover - pki only makes EC or RSA keys
            raise ValueError("unsupported service-account key type")
        der = self._pub.public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = _b64(_sha256(der))

    def _sign(self, signing_input: bytes) -> bytes:
        if self.alg == "ES256":
            der = self._key.sign(signing_input, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
            r, s = decode_dss_signature(der)
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[call-arg]

    def _verify(self, signing_input: bytes, sig: bytes) -> bool:
        try:
            if self.alg == "ES256":
                if len(sig) != 64:
                    return False
                der = encode_dss_signature(int.from_bytes(sig[:32], "big"),
                                           int.from_bytes(sig[32:], "big"))
                self._pub.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg]
            else:
                self._pub.verify(sig, signing_input, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[call-arg]
            return True
        except InvalidSignature:
            return False

    def issue(self, namespace: str, name: str, uid: str, *, audiences: list[str] | None = None,
              expiration_seconds: int = 3600, pod: dict | None = None) -> tuple[str, int]:
        now = int(time.time())
        exp = now + max(600, expiration_seconds)
        claims: dict = {
            "aud": list(audiences or DEFAULT_AUDIENCES), "exp": exp, "iat": now, "nbf": now,
            "iss": self.issuer, "sub": f"system:serviceaccount:{namespace}:{name}",
            "kubernetes.io": {"namespace": namespace,
                              "serviceaccount": {"name": name, "uid": uid}},
        }
        if pod:
            claims["kubernetes.io"]["pod"] = {"name": pod["metadata"]["name"],
                                              "uid": pod["metadata"]["uid"]}
        return self._signed(claims), exp

    def issue_legacy(self, namespace: str, name: str, uid: str, secret_name: str) -> str:
        """A legacy token for a kubernetes.io/service-account-token Secret: upstream's
        claims, no audience and no expiry (it lives as long as its Secret)."""
        claims = {"iss": LEGACY_ISSUER,
                  _LEGACY_CLAIM + "namespace": namespace,
                  _LEGACY_CLAIM + "secret.name": secret_name,
                  _LEGACY_CLAIM + "service-account.name": name,
                  _LEGACY_CLAIM + "service-account.uid": uid,
                  "sub": f"system:serviceaccount:{namespace}:{name}"}
        return self._signed(claims)

    def _signed(self, claims: dict) -> str:
        header = {"alg": self.alg, "kid": self.kid}
        signing_input = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}".encode()
        return f"{signing_input.decode()}.{_b64(self._sign(signing_input))}"

    def verified_claims(self, token: str) -> dict | None:
        """The claims of a JWT signed with this issuer's key, or None (malformed, another
        algorithm or key, a bad signature)."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header = orjson.loads(_unb64(parts[0]))
            claims = orjson.loads(_unb64(parts[1]))
            sig = _unb64(parts[2])
        except Exception:  # noqa: BLE001 - not our token
            return None
        if not isinstance(header, dict) or not isinstance(claims, dict) or \
                header.get("alg") != self.alg:
            return None
        if not self._verify(f"{parts[0]}.{parts[1]}".encode(), sig):
            return None
        return claims

    def authenticate(self, token: str) -> User | None:
        claims = self.verified_claims(token)
        if claims is None:
            return None
        if claims.get("iss") != self.issuer or claims.get("exp", 0) < time.time():
            return None
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not set(auds) & set(DEFAULT_AUDIENCES):
            return None  # minted for another audience (e.g. "vault"): not for this API
        sub = str(claims.get("sub", ""))
        if not sub.startswith("system:serviceaccount:"):
            return None
        ns = sub.split(":")[2]
        bound = bound_pod_of(claims)
        if bound is not None and self.pod_alive is not None and \
                self.pod_alive(ns, bound[0], bound[1]) is False:
            return None  # a pod-bound token dies with its pod (upstream: "pod ... not found")
        if not self._account_matches(ns, sub.split(":")[3] if sub.count(":") >= 3 else "",
                                     claims):
            return None  # nor does it outlive its ServiceAccount (deleted, or made again)
        return _account_user(ns, sub)

    def _account_matches(self, ns: str, name: str, claims: dict) -> bool:
        """False when the token's ServiceAccount is gone or is another one of that name (its
        uid differs from the token's claim), as upstream's token authenticator checks."""
        if self.account_uid is None:
            return True
        uid = self.account_uid(ns, name)
        if uid is None:
            return True
        claimed = _claimed_account_uid(claims)
        return bool(uid) and (not claimed or claimed == uid)


def _account_user(ns: str, sub: str) -> User:
    return User(sub, ("system:serviceaccounts", f"system:serviceaccounts:{ns}",
                      "system:authenticated"))


def legacy_token_user(issuer: TokenIssuer, token: str,
                      secret_of: Callable[[str, str], dict | None],
                      account_of: Callable[[str, str], dict | None]) -> User | None:
    """The user of a legacy service-account token (TokenIssuer.issue_legacy), or None.

    As upstream's legacy validator with lookup on: the token counts only while its Secret
    exists, is not being deleted and still holds this very token, and while its
    ServiceAccount exists with the uid the token names. `secret_of` and `account_of` read
    (namespace, name) from the server's informer caches."""
    claims = issuer.verified_claims(token)
    if claims is None or claims.get("iss") != LEGACY_ISSUER:
        return None
    ns, secret_name, name, uid = (claims.get(_LEGACY_CLAIM + k) for k in (
        "namespace", "secret.name", "service-account.name", "service-account.uid"))
    if not all(isinstance(v, str) and v for v in (ns, secret_name, name, uid)):
        return None
    sub = f"system:serviceaccount:{ns}:{name}"
    if claims.get("sub") != sub:
        return None
    secret = secret_of(ns, secret_name)
    if secret is None or (secret.get("metadata") or {}).get("deletionTimestamp") or \
            not hmac.compare_digest(_secret_token(secret), token.encode()):
        return None
    account = account_of(ns, name)
    md = (account or {}).get("metadata") or {}
    if account is None or md.get("deletionTimestamp") or md.get("uid") != uid:
        return None
    return _account_user(ns, sub)


def _secret_token(secret: dict) -> bytes:
    value = (secret.get("data") or {}).get("token")
    try:
        return base64.b64decode(value) if isinstance(value, str) else b""
    except ValueError:
        return b""


def _claimed_account_uid(claims: dict) -> str:
    account = ((claims.get("kubernetes.io") or {}) if isinstance(claims, dict) else {}).get(
        "serviceaccount")
    return str(account.get("uid") or "") if isinstance(account, dict) else ""


def bound_pod_of(claims: dict) -> tuple[str, str] | None:
    """(name, uid) of the pod a token is bound to, from its kubernetes.io claim."""
    pod = ((claims.get("kubernetes.io") or {}) if isinstance(claims, dict) else {}).get("pod")
    if isinstance(pod, dict) and pod.get("name") and pod.get("uid"):
        return str(pod["name"]), str(pod["uid"])
    return None


def _sha256(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize()


def token_request_handler(registry: Registry, issuer: TokenIssuer):
    """serviceaccounts/<name>/token: POST a TokenRequest, get a signed token back."""

    async def handle(request: web.Request, rp: ResourcePath, user: User) -> web.Response:
        if request.method != "POST":
            raise errors.method_not_allowed("token only supports create")
        res = rp.resource
        assert res is not None and rp.name
        sa = await registry.get(res, rp.namespace, rp.name)
        body = decode_body(await request.read(), request.content_type) if request.can_read_body \
            else {}
        spec = (body or {}).get("spec") or {}
        pod = None
        ref = spec.get("boundObjectRef") or {}
        if ref.get("kind") == "Pod" and ref.get("name"):
            pods = registry.resources.get("", "v1", "pods")
            pod = await registry.get(pods, rp.namespace, ref["name"])
        token, exp = issuer.issue(rp.namespace or "default", rp.name, sa["metadata"]["uid"],
                                  audiences=spec.get("audiences") or None,
                                  expiration_seconds=int(spec.get("expirationSeconds") or 3600),
                                  pod=pod)
        import datetime as _dt
        exp_ts = _dt.datetime.fromtimestamp(exp, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out = {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
               "metadata": {"name": rp.name, "namespace": rp.namespace,
                            "creationTimestamp": now_rfc3339()},
               "spec": {**spec, "audiences": spec.get("audiences") or list(DEFAULT_AUDIENCES),
                        "expirationSeconds": int(spec.get("expirationSeconds") or 3600)},
               "status": {"token": token, "expirationTimestamp": exp_ts}}
        return json_response(out, 201)

    return handle


# ---------------------------------------------------------------- pod admission

SA_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_VOLUME_PREFIX = "kube-api-access-"
TOKEN_EXPIRATION = 3607  # upstream's kube-api-access default (an hour plus 7 s)
_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # upstream's name generator alphabet
SA_WAIT_SECONDS = 5.0  # how long a pod waits for its namespace's "default" ServiceAccount


def _token_volume(name: str) -> dict:
    return {"name": name, "projected": {"defaultMode": 420, "sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt",
                                                                 "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
            "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]}}


def mount_service_account_token(spec: dict, suffix: str | None = None) -> str | None:
    """Upstream's mountServiceAccountToken: every container and initContainer without a mount
    at SA_MOUNT_PATH gets a read-only one of the kube-api-access-xxxxx projected volume, which
    is added if a container needed it and no such volume exists. Returns the volume name used
    (None if no container needed it)."""
    volumes = spec.get("volumes") or []
    name = next((v.get("name") for v in volumes if isinstance(v, dict) and
                 str(v.get("name") or "").startswith(TOKEN_VOLUME_PREFIX)), None)
    has_volume = name is not None
    if name is None:
        name = TOKEN_VOLUME_PREFIX + (suffix or "".join(random.choices(_SUFFIX_CHARS, k=5)))
    needed = False
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            mounts = c.get("volumeMounts") or []
            if any(isinstance(m, dict) and m.get("mountPath") == SA_MOUNT_PATH for m in mounts):
                continue
            c["volumeMounts"] = [*mounts, {"name": name, "readOnly": True,
                                           "mountPath": SA_MOUNT_PATH}]
            needed = True
    if not needed:
        return None
    if not has_volume:
        spec["volumes"] = [*volumes, _token_volume(name)]
    return name


def should_automount(spec: dict, account: dict | None) -> bool:
    """The pod's automountServiceAccountToken wins, then the ServiceAccount's; default true."""
    if spec.get("automountServiceAccountToken") is not None:
        return bool(spec["automountServiceAccountToken"])
    if account is not None and account.get("automountServiceAccountToken") is not None:
        return bool(account["automountServiceAccountToken"])
    return True


class ServiceAccountAdmission:
    """Mutating admission step on pod create (upstream's ServiceAccount admission plugin;
    bootstrap adds it to the server's chain): the pod's ServiceAccount must exist (403
    otherwise) and its token is mounted unless opted out.

    A namespace's "default" account is made by the serviceaccount controller just after the
    namespace: a pod created right away waits up to SA_WAIT_SECONDS for it (upstream retries
    its lookup against the API for the same reason) instead of failing."""

    def __init__(self, registry: Registry, wait_seconds: float = SA_WAIT_SECONDS) -> None:
        self.registry = registry
        self.wait_seconds = wait_seconds

    async def _account(self, ns: str, name: str) -> dict | None:
        res = self.registry.resources.get("", "v1", "serviceaccounts")
        deadline = time.monotonic() + (self.wait_seconds if name == "default" else 0.0)
        while True:
            sa = await self.registry.read_through(res, ns, name)
            if sa is not None or time.monotonic() >= deadline:
                return sa
            await asyncio.sleep(0.1)

    async def __call__(self, res, obj: dict) -> None:
        if res.group != "" or res.kind != "Pod":
            return
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        ns = (obj.get("metadata") or {}).get("namespace") or "default"
        name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        spec["serviceAccountName"] = spec["serviceAccount"] = name
        account = await self._account(ns, name)
        if account is None:
            pod = (obj.get("metadata") or {}).get("name") or ""
            raise errors.forbidden(f'pods "{pod}" is forbidden: error looking up service '
                                   f'account {ns}/{name}: serviceaccount "{name}" not found',
                                   "", "pods", pod)
        if should_automount(spec, account):
            mount_service_account_token(spec)
