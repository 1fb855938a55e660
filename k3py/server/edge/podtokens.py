"""Bound service-account tokens for the pods of tunnel-connected nodes.

Upstream, the kubelet asks the API server for each pod's token (TokenRequest bound to the pod)
and rotates it. A k3py agent talks to the server only through its tunnel, so the server does
the kubelet's part instead:

- For every pod with projected `serviceAccountToken` sources, CloudHub sends a `podtokens`
  object down the tunnel right before the pod itself (like a referenced secret), keyed by the
  pod's namespace/name: {"metadata": {namespace, name, uid}, "tokens": {"<volume>/<path>":
  {"token", "expirationTimestamp"}}}. The agent's metamanager caches it with the pod, and
  k3py/agent/pods/podspec.py writes each token into the pod's projected volume.
- Each token is minted here with TokenIssuer: subject the pod's ServiceAccount, audience the
  source's `audience` (default: the API server's), lifetime `expirationSeconds` (at least 600
  s, as upstream), bound to the pod (kubernetes.io.pod {name, uid} claims).
- A token is re-minted once 80 % of its lifetime has passed (upstream kubelet's rule); a loop
  checks the pods of connected nodes every REFRESH_CHECK_SECONDS and sends fresh objects down;
  the agent rewrites the files atomically, so a running pod sees the new token.
- The authenticator rejects a pod-bound token once its pod (by uid) is gone: TokenIssuer.
  pod_alive is answered from CloudHub's pod informer.

Tokens are kept only in memory here (re-minted after a server restart, which the agent then
receives with the full snapshot); the agent keeps the last ones in meta.db for offline use."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from k3py.server.serviceaccounts import TokenIssuer

__all__ = ["PodTokens", "token_sources", "MIN_EXPIRATION"]

log = logging.getLogger("k3py.podtokens")

MIN_EXPIRATION = 600
DEFAULT_EXPIRATION = 3600
REFRESH_FRACTION = 0.8
REFRESH_CHECK_SECONDS = 30.0


def token_sources(pod: dict) -> list[tuple[str, str, int]]:
    """(file key "<volume>/<path>", audience or "", expirationSeconds) per serviceAccountToken
    source of the pod's projected volumes."""
    out = []
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        for src in ((vol.get("projected") or {}).get("sources") or []):
            sat = src.get("serviceAccountToken")
            if isinstance(sat, dict) and sat.get("path"):
                exp = max(MIN_EXPIRATION, int(sat.get("expirationSeconds") or DEFAULT_EXPIRATION))
                out.append((f"{vol.get('name')}/{sat['path']}", sat.get("audience") or "", exp))
    return out


class PodTokens:
    """Minted tokens per pod uid; `object_for` answers CloudHub, `refresh_loop` rotates."""

    def __init__(self, issuer: TokenIssuer, account_uid: Callable[[str, str], str],
                 clock: Callable[[], float] = time.time) -> None:
        self.issuer = issuer
        self.account_uid = account_uid  # (namespace, name) -> ServiceAccount uid or ""
        self.clock = clock
        self._objects: dict[str, dict] = {}  # pod uid -> the podtokens object last made
        self._refresh_at: dict[str, float] = {}  # pod uid -> when its earliest token is due

    def forget(self, pod_uid: str) -> None:
        self._objects.pop(pod_uid, None)
        self._refresh_at.pop(pod_uid, None)

    def due(self, pod: dict) -> bool:
        uid = pod["metadata"].get("uid") or ""
        return bool(token_sources(pod)) and self.clock() >= self._refresh_at.get(uid, 0.0)

    def object_for(self, pod: dict) -> dict | None:
        """The pod's tokens object (None if it has no token sources), minted if due."""
        sources = token_sources(pod)
        md = pod.get("metadata") or {}
        uid = md.get("uid") or ""
        if not sources:
            return None
        if not self.due(pod) and uid in self._objects:
            return self._objects[uid]
        ns = md.get("namespace") or "default"
        sa = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        now = self.clock()
        tokens, refresh_at = {}, None
        for key, audience, expiration in sources:
            token, exp = self.issuer.issue(ns, sa, self.account_uid(ns, sa),
                                           audiences=[audience] if audience else None,
                                           expiration_seconds=expiration, pod=pod)
            tokens[key] = {"token": token, "expirationTimestamp": exp}
            at = now + REFRESH_FRACTION * expiration  # token_sources applied the minimum
            refresh_at = at if refresh_at is None else min(refresh_at, at)
        obj = {"apiVersion": "v1", "kind": "PodTokens",
               "metadata": {"namespace": ns, "name": md.get("name"), "uid": uid},
               "tokens": tokens}
        self._objects[uid] = obj
        self._refresh_at[uid] = refresh_at or now
        return obj

    def deleted_object(self, pod: dict) -> dict:
        md = pod.get("metadata") or {}
        return {"apiVersion": "v1", "kind": "PodTokens",
                "metadata": {"namespace": md.get("namespace"), "name": md.get("name"),
                             "uid": md.get("uid")}}

    async def refresh_loop(self, nodes: Callable[[], Iterable[str]],
                           pods_on: Callable[[str], list[dict]],
                           send: Callable[[str, dict], None],
                           interval: float = REFRESH_CHECK_SECONDS) -> None:
        """Every `interval`, re-mint due tokens of the pods on connected nodes and send them."""
        while True:
            await asyncio.sleep(interval)
            for node in list(nodes()):
                for pod in pods_on(node):
                    if pod["metadata"].get("deletionTimestamp") or not self.due(pod):
                        continue
                    try:
                        obj = self.object_for(pod)
                        if obj is not None:
                            send(node, obj)
                    except Exception:  # noqa: BLE001 - the next round tries again
                        log.exception("rotating the tokens of pod %s failed",
                                      pod["metadata"].get("name"))
