"""RBAC for users that are neither admins (system:masters) nor nodes: Roles, ClusterRoles and
their bindings, evaluated from informer caches like upstream's RBAC authorizer (rules with
verbs, apiGroups, resources incl. "res/sub" and "*", resourceNames; User, Group and
ServiceAccount subjects). Only grants, never denies: bootstrap adds it to the server's
AuthorizerChain after the admin and Node authorizers (k3py.server.nodeauthz). Not
modelled: aggregated ClusterRoles, nonResourceURLs, escalation checks on writes to RBAC objects.

Needed so in-cluster clients (service-account tokens mounted into pods) can be given access
the upstream way: a RoleBinding of the pod's ServiceAccount to a Role."""

from __future__ import annotations

from k3py.server.apiserver.auth import Attributes, User
from k3py.server.controllers.base import InformerFactory

__all__ = ["RBACAuthorizer", "rule_allows", "subject_matches"]

_G = "rbac.authorization.k8s.io"


def _has(values: list | None, want: str) -> bool:
    return bool(values) and ("*" in values or want in values)


def rule_allows(rule: dict, verb: str, group: str, plural: str, name: str | None,
                subresource: str = "") -> bool:
    if not _has(rule.get("verbs"), verb) or not _has(rule.get("apiGroups"), group):
        return False
    resources = rule.get("resources") or []
    what = f"{plural}/{subresource}" if subresource else plural
    if not ("*" in resources or what in resources or
            (subresource and f"*/{subresource}" in resources)):
        return False
    names = rule.get("resourceNames") or []
    return not names or (name is not None and name in names)


def subject_matches(subject: dict, user: User, binding_ns: str | None) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return subject.get("name") == user.name
    if kind == "Group":
        return subject.get("name") in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns or ""
        return user.name == f"system:serviceaccount:{ns}:{subject.get('name')}"
    return False


class RBACAuthorizer:
    """Reads the four RBAC informers of the server's shared InformerFactory (which starts and
    stops them)."""

    def __init__(self, informers: InformerFactory) -> None:
        self.roles = informers.informer(_G, "roles")
        self.role_bindings = informers.informer(_G, "rolebindings")
        self.cluster_roles = informers.informer(_G, "clusterroles")
        self.cluster_bindings = informers.informer(_G, "clusterrolebindings")

    def _rules(self, ref: dict, ns: str | None) -> list[dict]:
        if ref.get("kind") == "ClusterRole":
            role = self.cluster_roles.get(None, ref.get("name") or "")
        elif ref.get("kind") == "Role" and ns:
            role = self.roles.get(ns, ref.get("name") or "")
        else:
            role = None
        return (role or {}).get("rules") or []

    def allows(self, attrs: Attributes) -> bool:
        user, verb, group, plural, namespace, name, subresource = (
            attrs.user, attrs.verb, attrs.group, attrs.plural, attrs.namespace, attrs.name,
            attrs.subresource)
        bindings = [(b, None) for b in self.cluster_bindings.list()]
        if namespace:
            bindings += [(b, namespace) for b in self.role_bindings.list(namespace)]
        for binding, ns in bindings:
            if not any(subject_matches(s, user, ns) for s in binding.get("subjects") or []
                       if isinstance(s, dict)):
                continue
            for rule in self._rules(binding.get("roleRef") or {}, ns):
                if isinstance(rule, dict) and rule_allows(rule, verb, group, plural, name,
                                                          subresource):
                    return True
        return False
