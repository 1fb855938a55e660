"""RBAC: the authorizer (Roles, ClusterRoles, bindings; resource and non-resource rules), the
default roles reconciled at start, ClusterRole aggregation and escalation prevention.

Modules: rules (pure rule semantics), authorizer, defaults, aggregation, escalation.
k3py.server.bootstrap wires them into a server."""

from k3py.server.rbac.authorizer import RBACAuthorizer
from k3py.server.rbac.rules import rule_allows, subject_matches

__all__ = ["RBACAuthorizer", "rule_allows", "subject_matches"]
