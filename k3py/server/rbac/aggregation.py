"""The ClusterRole aggregation controller: a ClusterRole with an aggregationRule gets as its
rules the union of the rules of every other ClusterRole its clusterRoleSelectors match (admin,
edit and view gather the aggregate-to-* roles), rewritten whenever any ClusterRole changes.

As upstream's clusterroleaggregation controller: rules in role-name order, duplicates dropped,
the aggregated role's own rules replaced. Started by k3py.server.bootstrap with the others."""

from __future__ import annotations

from k3py.api.selectors import SelectorError, label_selector_from_struct
from k3py.server.controllers.base import Controller, ControllerContext
from k3py.server.rbac.authorizer import GROUP

__all__ = ["AggregationController", "aggregated_rules"]


def aggregated_rules(role: dict, all_roles: list[dict]) -> list[dict]:
    """The union of the rules of the roles in `all_roles` that `role`'s selectors match."""
    name = role["metadata"]["name"]
    selectors = (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []
    out: list[dict] = []
    for sel in selectors:
        if not isinstance(sel, dict):
            continue
        try:
            selector = label_selector_from_struct(sel)
        except SelectorError:
            continue
        for other in sorted(all_roles, key=lambda r: r["metadata"]["name"]):
            if other["metadata"]["name"] == name or \
                    not selector.matches((other.get("metadata") or {}).get("labels") or {}):
                continue
            for rule in other.get("rules") or []:
                if isinstance(rule, dict) and rule not in out:
                    out.append(rule)
    return out


class AggregationController(Controller):
    name = "clusterrole-aggregation"
    workers = 1

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.res = ctx.resource(GROUP, "clusterroles")
        self.roles = ctx.informers.informer(GROUP, "clusterroles")

    def setup(self) -> None:
        self.roles.add_handler(self._on_change)

    def _on_change(self, _etype: str, _old: dict | None, _new: dict | None) -> None:
        for role in self.roles.list():
            if role.get("aggregationRule"):
                self.enqueue(role["metadata"]["name"])

    async def reconcile(self, key: str) -> None:
        role = self.roles.get(None, key)
        if role is None or not role.get("aggregationRule"):
            return
        rules = aggregated_rules(role, self.roles.list())
        if (role.get("rules") or []) == rules:
            return

        def set_rules(obj: dict) -> dict | None:
            if not obj.get("aggregationRule") or (obj.get("rules") or []) == rules:
                return None
            obj["rules"] = rules
            return obj
        await self.registry.update_with(self.res, None, key, set_rules,
                                        field_manager="clusterrole-aggregation-controller")
