"""RBAC escalation prevention: a write of a Role or ClusterRole must not grant rules its
author does not hold, nor a binding bind a role whose rules its author does not hold, as
upstream's RBAC storage enforces on create and update.

Allowed anyway: system:masters, the server's own writes (no request user), a role write by a
user with the `escalate` verb on roles/clusterroles, a binding by a user with `bind` on the
referenced role. An aggregationRule needs full authority (cluster-admin). Otherwise 403 with
upstream's message. Installed by k3py.server.bootstrap as a validator of the admission chain;
it reads the request's user from REQUEST_USER."""

from __future__ import annotations

from k3py.api import errors
from k3py.api.resources import Resource
from k3py.server.apiserver.auth import REQUEST_USER, Attributes, AuthorizerChain, User
from k3py.server.rbac.authorizer import GROUP, RBACAuthorizer
from k3py.server.rbac.rules import compact, compact_string, covers

__all__ = ["EscalationCheck"]

_FULL_AUTHORITY = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                   {"verbs": ["*"], "nonResourceURLs": ["*"]}]
_ROLES = {"roles", "clusterroles"}
_BINDINGS = {"rolebindings": "roles", "clusterrolebindings": "clusterroles"}


def _groups_text(user: User) -> str:
    return "[" + " ".join(f'"{g}"' for g in user.groups) + "]"


class EscalationCheck:
    """The validator: `check(res, obj, old)` raises 403 or returns no causes."""

    def __init__(self, chain: AuthorizerChain, rbac: RBACAuthorizer) -> None:
        self.chain = chain
        self.rbac = rbac

    def __call__(self, res: Resource, obj: dict, old: dict | None) -> list:
        user = REQUEST_USER.get()
        if res.group != GROUP or user is None or user.is_admin:
            return []
        md = obj.get("metadata") or {}
        ns = md.get("namespace") if res.namespaced else None
        name = md.get("name") or ""
        if res.plural in _ROLES:
            self._check_role(res, obj, user, ns, name)
        elif res.plural in _BINDINGS:
            self._check_binding(res, obj, old, user, ns, name)
        return []

    def _check_role(self, res: Resource, obj: dict, user: User, ns: str | None,
                    name: str) -> None:
        if self.chain.allows(Attributes(user, "escalate", GROUP, res.plural, ns)):
            return
        rules = [r for r in obj.get("rules") or [] if isinstance(r, dict)]
        if obj.get("aggregationRule") and covers(self.rbac.rules_for(user, ns), _FULL_AUTHORITY):
            raise errors.forbidden(f'{res.group_resource} "{name}" is forbidden: must have '
                                   f'cluster-admin privileges to use the aggregationRule',
                                   res.group, res.plural, name)
        self._confirm_no_escalation(res, user, ns, name, rules)

    def _check_binding(self, res: Resource, obj: dict, old: dict | None, user: User,
                       ns: str | None, name: str) -> None:
        ref = obj.get("roleRef") or {}
        if old is not None and old.get("roleRef") == ref and \
                old.get("subjects") == obj.get("subjects"):
            return  # metadata only (labels, finalizers): nothing granted
        role_plural = "roles" if ref.get("kind") == "Role" else "clusterroles"
        if self.chain.allows(Attributes(user, "bind", GROUP, role_plural, ns,
                                        ref.get("name") or "")):
            return
        self._confirm_no_escalation(res, user, ns, name, self.rbac.role_rules(ref, ns))

    def _confirm_no_escalation(self, res: Resource, user: User, ns: str | None, name: str,
                               rules: list[dict]) -> None:
        missing = covers(self.rbac.rules_for(user, ns), rules)
        if not missing:
            return
        text = "\n".join(compact_string(r) for r in compact(missing))
        raise errors.forbidden(
            f'{res.group_resource} "{name}" is forbidden: user "{user.name}" '
            f'(groups={_groups_text(user)}) is attempting to grant RBAC permissions not '
            f'currently held:\n{text}', res.group, res.plural, name)
