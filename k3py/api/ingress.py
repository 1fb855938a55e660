"""The built-in ingress controller's identity and which Ingresses it serves: one definition for
the server (its IngressClass, status, Events, the TLS secrets sent to nodes and the Node
authorizer) and the agent's proxy (agent/ingress). No I/O.

An Ingress is served when the ingress is on (an IngressClass with controller
`k3py.io/ingress` exists: the server keeps `k3py` unless `--disable ingress`) and the Ingress
names no class, names `k3py` or K3s's `traefik`, or names a class of that controller."""

from __future__ import annotations

from collections.abc import Iterable

from k3py.api.objects import ADDON_ANNOTATION

__all__ = ["CONTROLLER", "CLASS_NAME", "CLASS_ALIASES", "ADDON", "ADDON_ALIAS",
           "CLASS_ANNOTATION", "DEFAULT_CLASS_ANNOTATION", "ADDON_ANNOTATION", "TLS_SECRET_TYPE",
           "ingress_class", "enabled", "class_of", "served", "tls_secret_names"]

CONTROLLER = "k3py.io/ingress"
CLASS_NAME = "k3py"
CLASS_ALIASES = ("traefik",)  # K3s's class name: manifests written for K3s are served
ADDON = "ingress"  # its --disable name
ADDON_ALIAS = "traefik"  # K3s's --disable name for the same component
CLASS_ANNOTATION = "kubernetes.io/ingress.class"  # before spec.ingressClassName (deprecated)
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
TLS_SECRET_TYPE = "kubernetes.io/tls"


def ingress_class() -> dict:
    """The IngressClass the server keeps: the default class, so class-less Ingresses of a
    tutorial land here as on K3s."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": CLASS_NAME,
                         "annotations": {DEFAULT_CLASS_ANNOTATION: "true",
                                         ADDON_ANNOTATION: ADDON}},
            "spec": {"controller": CONTROLLER}}


def _ours(classes: Iterable[dict]) -> set[str]:
    return {(c.get("metadata") or {}).get("name") or "" for c in classes
            if (c.get("spec") or {}).get("controller") == CONTROLLER}


def enabled(classes: Iterable[dict]) -> bool:
    """Whether the ingress is on: some IngressClass names our controller."""
    return bool(_ours(classes))


def class_of(ing: dict) -> str:
    """The class an Ingress asks for: spec.ingressClassName, else the deprecated annotation."""
    return (ing.get("spec") or {}).get("ingressClassName") or \
        ((ing.get("metadata") or {}).get("annotations") or {}).get(CLASS_ANNOTATION) or ""


def served(ing: dict, classes: Iterable[dict]) -> bool:
    """Whether our proxy serves `ing`, given every IngressClass."""
    ours = _ours(classes)
    if not ours:
        return False
    cls = class_of(ing)
    return not cls or cls in ours or cls == CLASS_NAME or cls in CLASS_ALIASES


def tls_secret_names(ing: dict) -> set[str]:
    """The names of the Secrets (in the Ingress's namespace) its spec.tls entries name."""
    return {str(t["secretName"]) for t in (ing.get("spec") or {}).get("tls") or []
            if isinstance(t, dict) and t.get("secretName")}
