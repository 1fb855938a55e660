"""Ingresses down the tunnel: every node's ingress proxy (agent/ingress) routes by every
Ingress and IngressClass, and terminates TLS with the `kubernetes.io/tls` Secrets that served
Ingresses name in spec.tls (k3py.api.ingress.served), so all of them go to every node and are
kept in its metamanager: the proxy serves them while the server is unreachable.

`IngressSecrets` is the one answer to "which Secrets are those", for the feed and for the Node
authorizer (server/nodeauthz.py), which lets a node read exactly them, as K3s's Traefik RBAC
lets Traefik read the TLS secrets of the ingresses it serves."""

from __future__ import annotations

from collections.abc import Callable

from k3py.api.ingress import TLS_SECRET_TYPE, served, tls_secret_names
from k3py.api.objects import name_of, namespace_of
from k3py.server.controllers.base import Informer, InformerFactory
from k3py.tunnel.protocol import INGRESS_KINDS

__all__ = ["INGRESS_GROUP", "IngressSecrets", "IngressFeed"]

INGRESS_GROUP = "networking.k8s.io"
_TLS_INDEX = "tls-secret"  # ingresses by "namespace/secret name" of their spec.tls


def _tls_keys(ing: dict) -> list[str]:
    ns = namespace_of(ing)
    return [f"{ns}/{name}" for name in sorted(tls_secret_names(ing))]


class IngressSecrets:
    """The TLS Secrets of served Ingresses, from the server's shared informers."""

    def __init__(self, informers: InformerFactory) -> None:
        self.ingresses = informers.informer(INGRESS_GROUP, "ingresses")
        self.ingresses.add_index(_TLS_INDEX, _tls_keys)  # the one definition: shared informer
        self.classes = informers.informer(INGRESS_GROUP, "ingressclasses")
        self.secrets = informers.informer("", "secrets")

    def served(self, namespace: str, name: str) -> bool:
        """Whether a node may hold the Secret namespace/name: a TLS secret of a served Ingress."""
        secret = self.secrets.get(namespace, name)
        if secret is None or secret.get("type") != TLS_SECRET_TYPE:
            return False
        classes = self.classes.list()
        return any(served(ing, classes)
                   for ing in self.ingresses.by_index(_TLS_INDEX, f"{namespace}/{name}"))

    def keys(self) -> set[tuple[str, str]]:
        """(namespace, name) of every such Secret."""
        classes = self.classes.list()
        out: set[tuple[str, str]] = set()
        for ing in self.ingresses.list():
            if served(ing, classes):
                ns = namespace_of(ing)
                out.update((ns, name) for name in tls_secret_names(ing)
                           if (self.secrets.get(ns, name) or {}).get("type") == TLS_SECRET_TYPE)
        return out


Send = Callable[[str, str, str, dict], None]  # (node, plural, event type, object)


class IngressFeed:
    """Queues Ingress, IngressClass and served TLS Secret changes for every node session.

    `send(node, plural, etype, obj)` queues one change; `nodes()` the nodes with a session;
    `pod_secret(node, ns, name)` whether the node's pods need that Secret (then it stays when
    no Ingress names it any more)."""

    def __init__(self, informers: InformerFactory, send: Send, nodes: Callable[[], list[str]],
                 pod_secret: Callable[[str, str, str], bool]) -> None:
        self._informers = informers
        self._send = send
        self._nodes = nodes
        self._pod_secret = pod_secret
        self.tls = IngressSecrets(informers)
        self._held: set[tuple[str, str]] = set()  # the TLS secrets the nodes were sent

    def start(self) -> None:
        for plural in INGRESS_KINDS:
            inf: Informer = self._informers.informer(INGRESS_GROUP, plural)
            inf.add_handler(lambda t, o, n, plural=plural: self._on_ingress(plural, t, o, n))
        self.tls.secrets.add_handler(self._on_secret)

    def snapshot(self) -> dict[str, list[dict]]:
        """The ingress part of a node's full sync; "secrets" to add to its pods' ones."""
        self._held = self.tls.keys()
        return {"ingresses": self.tls.ingresses.list(),
                "ingressclasses": self.tls.classes.list(),
                "secrets": [s for ns, name in sorted(self._held)
                            if (s := self.tls.secrets.get(ns, name)) is not None]}

    def _to_all(self, plural: str, etype: str, obj: dict) -> None:
        for node in self._nodes():
            self._send(node, plural, etype, obj)

    def _on_ingress(self, plural: str, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old
        if obj is None:
            return
        if etype == "DELETED":
            self._to_all(plural, etype, obj)
            self._resync_secrets()  # the proxy drops the route before its certificate
        else:
            self._resync_secrets()  # a certificate before the route that needs it
            self._to_all(plural, etype, obj)

    def _resync_secrets(self) -> None:
        now = self.tls.keys()
        for ns, name in sorted(now - self._held):
            secret = self.tls.secrets.get(ns, name)
            if secret is not None:
                self._to_all("secrets", "MODIFIED", secret)
        for ns, name in sorted(self._held - now):
            self._forget(ns, name)
        self._held = now

    def _forget(self, ns: str, name: str) -> None:
        gone = {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"namespace": ns, "name": name}}
        for node in self._nodes():
            if not self._pod_secret(node, ns, name):
                self._send(node, "secrets", "DELETED", gone)

    def _on_secret(self, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old
        if obj is None:
            return
        key = (namespace_of(obj), name_of(obj))
        now = etype != "DELETED" and self.tls.served(*key)
        if now:
            self._held.add(key)
            self._to_all("secrets", etype, obj)
        elif key in self._held:
            self._held.discard(key)
            if etype == "DELETED":
                self._to_all("secrets", etype, obj)
            else:  # no longer a TLS secret: nodes lose it unless their pods need it
                self._forget(*key)
