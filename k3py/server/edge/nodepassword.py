"""Node passwords: a node name belongs to the machine that first joined with it, as in K3s.

Each agent keeps a random secret in <data-dir>/agent/node-password and sends it when it asks for
a node certificate; the server keeps its scrypt hash in the Secret
kube-system/<node>.node-password.k3py. A different secret for a name whose Node exists is a
409 (two machines would otherwise fight over one Node, its pods and its tunnel); once the Node
is deleted (`kubectl delete node NAME`) the name is free and the next agent claims it. The
Node owns the Secret (ownerReference), so the garbage collector deletes it with the Node.

The tunnel checks the password at every connect. Next to the scrypt hash, the Secret keeps a
verifier, an HMAC of the password under a key derived from the node-signing CA's private key
(every server has it, from the shared bootstrap data; no node nor API client does): a match is
proof enough at the speed of one HMAC, so after a server restart a thousand reconnecting nodes
cost no thousand scrypts (40 ms of CPU each). A verifier that does not match (none yet, one
under the cluster token's key of the first verifier build, or a CA since rotated) leaves the
decision to scrypt, and once scrypt said yes the verifier is written."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import os

from k3py.api import errors

__all__ = ["NodePasswords", "secret_name", "hash_password", "check_password",
           "verifier_key"]

log = logging.getLogger("k3py.nodeauth")

NAMESPACE = "kube-system"
SECRET_TYPE = "k3py.io/node-password"
_N, _R, _P = 2 ** 14, 8, 1  # scrypt cost: ~20 ms, once per certificate request


def secret_name(node: str) -> str:
    return f"{node}.node-password.k3py"


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, salt_hex, _ = stored.split("$")
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    return kind == "scrypt" and hmac.compare_digest(hash_password(password, salt), stored)


def verifier_key(server_secret: bytes) -> bytes:
    """The key of the verifiers, from a secret every server holds and no node nor API client
    does: nodeauth passes the node-signing CA's private key, bootstrap data that the servers
    of one datastore share byte for byte (bootstrapdata.FILES), so all compute the same key.
    (The join token would not do: every node holds it.)"""
    return hashlib.sha256(b"k3py node password verifier\0" + server_secret).digest()


def _stored(secret: dict, field: str) -> str:
    try:
        return base64.b64decode((secret.get("data") or {}).get(field, "")).decode()
    except (ValueError, TypeError):
        return ""


class NodePasswords:
    """`key` (verifier_key): verifiers are written and checked; empty: scrypt only."""

    def __init__(self, registry, key: bytes = b"") -> None:
        self.registry = registry
        self.key = key
        self._lock = asyncio.Lock()  # one claim at a time: two racing joins cannot both win
        self._verified: dict[str, tuple[str, str]] = {}  # node -> (secret rv, password sha256)

    def _verifier(self, password: str, hashed: str) -> str:
        """HMAC(key, the stored hash's salt + password): one per node even for equal
        passwords."""
        salt = hashed.split("$")[1] if hashed.count("$") == 2 else ""
        return hmac.new(self.key, f"{salt}${password}".encode(), hashlib.sha256).hexdigest()

    async def _matches(self, secret: dict, password: str) -> bool:
        """Whether `password` is the one `secret` stores: its verifier if it matches, else
        scrypt (in a thread: 40 ms of CPU)."""
        hashed = _stored(secret, "hash")
        verifier = _stored(secret, "verifier")
        if self.key and verifier and hmac.compare_digest(
                self._verifier(password, hashed), verifier):
            return True
        return await asyncio.to_thread(check_password, password, hashed)

    def _secret(self, node: str, hashed: str, password: str,
                owner: dict | None = None) -> dict:
        md: dict = {"name": secret_name(node), "namespace": NAMESPACE,
                    "labels": {"k3py.io/node": node}}
        if owner is not None:
            md["ownerReferences"] = [_owner_ref(owner)]
        data = {"hash": base64.b64encode(hashed.encode()).decode()}
        if self.key:
            data["verifier"] = base64.b64encode(
                self._verifier(password, hashed).encode()).decode()
        return {"apiVersion": "v1", "kind": "Secret", "type": SECRET_TYPE, "metadata": md,
                "data": data}

    async def _node(self, node: str) -> dict | None:
        return await self.registry.try_get(self.registry.served("", "nodes"), None, node)

    async def owns(self, node: str, password: str) -> bool:
        """Whether `password` may use `node` now: the stored hash matches, or there is none
        (the Node was deleted, its Secret with it): then this machine claims the name again,
        so another machine cannot take it while this one is connected. The tunnel asks this
        on every connect, so a machine holding an old certificate for a name that went to
        another machine is turned away; the scrypt check is cached."""
        cur = await self.registry.try_get(self.registry.served("", "secrets"), NAMESPACE, secret_name(node))
        if cur is None:
            with contextlib.suppress(errors.StatusError):  # lost a race: check who won
                await self.claim(node, password)
            cur = await self.registry.try_get(self.registry.served("", "secrets"), NAMESPACE,
                                              secret_name(node))
            if cur is None:
                return True
        rv = cur["metadata"].get("resourceVersion", "")
        fingerprint = (rv, hashlib.sha256(password.encode()).hexdigest())
        if self._verified.get(node) == fingerprint:
            return True
        ok = await self._matches(cur, password)
        if ok:
            self._verified[node] = fingerprint
            await self._add_verifier(node, password, cur)
        return ok

    async def _add_verifier(self, node: str, password: str, secret: dict) -> None:
        """A Secret from before verifiers (or under another key) gets this key's, once, so
        that the next restart checks an HMAC, not scrypt, for this node."""
        hashed = _stored(secret, "hash")
        verifier = self._verifier(password, hashed) if self.key else ""
        if not verifier or _stored(secret, "verifier") == verifier:
            return

        def add(obj: dict) -> dict | None:
            if _stored(obj, "hash") != hashed:
                return None  # claimed again meanwhile: its own verifier came with it
            obj["data"] = {**(obj.get("data") or {}),
                           "verifier": base64.b64encode(verifier.encode()).decode()}
            return obj
        try:
            await self.registry.update_with(self.registry.served("", "secrets"), NAMESPACE,
                                            secret_name(node), add)
        except Exception as e:  # noqa: BLE001 - optional: it must never fail the dial
            log.warning("node %s: could not store its password verifier: %s", node, e)

    async def claim(self, node: str, password: str) -> None:
        """Accept `password` for `node` (storing it on first use) or raise a StatusError."""
        if not password:
            raise errors.bad_request("nodePassword is required (this agent is older than the "
                                     "server: upgrade it)")
        async with self._lock:
            secrets = self.registry.served("", "secrets")
            cur = await self.registry.try_get(secrets, NAMESPACE, secret_name(node))
            owner = await self._node(node)
            if cur is not None:
                if await self._matches(cur, password):
                    return
                if owner is not None:
                    raise errors.StatusError(
                        409, "Conflict",
                        f'node name "{node}" is already used by another machine (its node '
                        f"password differs): give this agent another --node-name or use "
                        f"--with-node-id; if that machine is gone, free the name with "
                        f"'kubectl delete node {node}'")
                log.info("node %s was deleted: its name goes to a new machine", node)
                # a new Secret (new uid), not an update: the garbage collector may be about
                # to delete the old one with its deleted Node (it deletes by uid)
                with contextlib.suppress(errors.StatusError):
                    await self.registry.delete(secrets, NAMESPACE, secret_name(node), {
                        "preconditions": {"uid": cur["metadata"].get("uid")}})
            hashed = await asyncio.to_thread(hash_password, password)
            await self.registry.create(secrets, NAMESPACE,
                                       self._secret(node, hashed, password, owner))

    async def adopt(self, node: str) -> None:
        """Make the Node the owner of its password Secret (called when a Node registers; the
        Secret is usually made first, at the join), so deleting the Node deletes it too."""
        owner = await self._node(node)
        if owner is None:
            return
        ref = _owner_ref(owner)
        secrets = self.registry.served("", "secrets")
        cur = await self.registry.try_get(secrets, NAMESPACE, secret_name(node))
        if cur is None or ref in (cur["metadata"].get("ownerReferences") or []):
            return

        def own(obj: dict) -> dict | None:
            refs = [r for r in obj["metadata"].get("ownerReferences") or []
                    if r.get("kind") != "Node"]  # a deleted Node of the same name
            obj["metadata"]["ownerReferences"] = [*refs, ref]
            return obj
        with contextlib.suppress(errors.StatusError):  # deleted meanwhile
            await self.registry.update_with(secrets, NAMESPACE, secret_name(node), own)


def _owner_ref(node: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "name": node["metadata"]["name"],
            "uid": node["metadata"]["uid"]}
