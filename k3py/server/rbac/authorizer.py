"""The RBAC authorizer: Roles, ClusterRoles and their bindings read from the server's shared
informers, evaluated like upstream's (a request is allowed when a rule of a role bound to the
user allows it; RBAC never denies, the chain's final Deny does).

Cluster bindings apply everywhere; RoleBindings in the request's namespace only. Also answers
"which rules does this user hold here" for the escalation check and SelfSubjectRulesReview."""

from __future__ import annotations

from collections.abc import Iterator

from k3py.server.apiserver.auth import Attributes, User
from k3py.server.controllers.base import InformerFactory
from k3py.server.rbac.rules import rule_allows_attrs, subject_matches

__all__ = ["RBACAuthorizer", "GROUP"]

GROUP = "rbac.authorization.k8s.io"


class RBACAuthorizer:
    """Reads the four RBAC informers of the server's shared InformerFactory (which starts and
    stops them)."""

    def __init__(self, informers: InformerFactory) -> None:
        self.roles = informers.informer(GROUP, "roles")
        self.role_bindings = informers.informer(GROUP, "rolebindings")
        self.cluster_roles = informers.informer(GROUP, "clusterroles")
        self.cluster_bindings = informers.informer(GROUP, "clusterrolebindings")

    def role_rules(self, ref: dict, ns: str | None) -> list[dict]:
        """The rules of a binding's roleRef (a Role only inside namespace `ns`)."""
        if not isinstance(ref, dict):
            return []
        if ref.get("kind") == "ClusterRole":
            role = self.cluster_roles.get(None, ref.get("name") or "")
        elif ref.get("kind") == "Role" and ns:
            role = self.roles.get(ns, ref.get("name") or "")
        else:
            role = None
        return [r for r in (role or {}).get("rules") or [] if isinstance(r, dict)]

    def _bound_rules(self, user: User, namespace: str | None) -> Iterator[dict]:
        bindings = [(b, None) for b in self.cluster_bindings.list()]
        if namespace:
            bindings += [(b, namespace) for b in self.role_bindings.list(namespace)]
        for binding, ns in bindings:
            subjects = binding.get("subjects") or []
            if any(isinstance(s, dict) and subject_matches(s, user, ns) for s in subjects):
                yield from self.role_rules(binding.get("roleRef") or {}, ns)

    def rules_for(self, user: User, namespace: str | None) -> list[dict]:
        """Every rule `user` holds in `namespace` (cluster-wide ones included)."""
        return list(self._bound_rules(user, namespace))

    def allows(self, attrs: Attributes) -> bool:
        namespace = attrs.namespace if attrs.path is None else None
        return any(rule_allows_attrs(rule, attrs)
                   for rule in self._bound_rules(attrs.user, namespace))
