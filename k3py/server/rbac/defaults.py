"""The default ClusterRoles and ClusterRoleBindings every cluster starts with (upstream's
bootstrap policy for these names), and their reconciliation at server start.

`reconcile_defaults` creates what is missing and, for objects annotated
rbac.authorization.kubernetes.io/autoupdate=true, adds missing rules, labels, aggregation
selectors and subjects; it never removes anything, and leaves objects whose annotation is
"false" alone, as upstream's RBAC post-start hook does. Called by k3py.server.bootstrap."""

from __future__ import annotations

import logging

from k3py.api import errors
from k3py.server.rbac.authorizer import GROUP
from k3py.server.rbac.rules import compact, covers
from k3py.server.registry import Registry

__all__ = ["default_cluster_roles", "default_cluster_role_bindings", "reconcile_defaults",
           "AUTOUPDATE", "AGGREGATE_TO"]

log = logging.getLogger("k3py.rbac")

AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"
_BOOTSTRAPPING = {"kubernetes.io/bootstrapping": "rbac-defaults"}

READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]


def _rule(verbs: list[str], groups: list[str], resources: list[str]) -> dict:
    return {"verbs": list(verbs), "apiGroups": list(groups), "resources": list(resources)}


def _urls(verbs: list[str], urls: list[str]) -> dict:
    return {"verbs": list(verbs), "nonResourceURLs": list(urls)}


def _view_rules() -> list[dict]:
    return [
        _rule(READ, [""], ["pods", "replicationcontrollers", "replicationcontrollers/scale",
                           "serviceaccounts", "services", "services/status", "endpoints",
                           "persistentvolumeclaims", "persistentvolumeclaims/status",
                           "configmaps"]),
        _rule(READ, [""], ["limitranges", "resourcequotas", "bindings", "events", "pods/status",
                           "resourcequotas/status", "namespaces/status",
                           "replicationcontrollers/status", "pods/log"]),
        _rule(READ, [""], ["namespaces"]),
        _rule(READ, ["discovery.k8s.io"], ["endpointslices"]),
        _rule(READ, ["apps"], ["controllerrevisions", "statefulsets", "statefulsets/scale",
                               "statefulsets/status", "daemonsets", "daemonsets/status",
                               "deployments", "deployments/scale", "deployments/status",
                               "replicasets", "replicasets/scale", "replicasets/status"]),
        _rule(READ, ["autoscaling"], ["horizontalpodautoscalers",
                                      "horizontalpodautoscalers/status"]),
        _rule(READ, ["batch"], ["jobs", "cronjobs", "cronjobs/status", "jobs/status"]),
        _rule(READ, ["extensions"], ["daemonsets", "daemonsets/status", "deployments",
                                     "deployments/scale", "deployments/status", "ingresses",
                                     "ingresses/status", "replicasets", "replicasets/scale",
                                     "replicasets/status", "replicationcontrollers/scale",
                                     "networkpolicies"]),
        _rule(READ, ["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        _rule(READ, ["networking.k8s.io"], ["ingresses", "ingresses/status",
                                            "networkpolicies"]),
    ]


def _edit_rules() -> list[dict]:
    return [
        _rule(["impersonate"], [""], ["serviceaccounts"]),
        _rule(WRITE, [""], ["pods", "pods/attach", "pods/proxy", "pods/exec",
                            "pods/portforward"]),
        _rule(["create"], [""], ["pods/eviction"]),
        _rule(WRITE, [""], ["replicationcontrollers", "replicationcontrollers/scale",
                            "serviceaccounts", "services", "services/proxy",
                            "persistentvolumeclaims", "configmaps", "secrets", "events"]),
        _rule(["create"], [""], ["serviceaccounts/token"]),
        _rule(WRITE, ["apps"], ["statefulsets", "statefulsets/scale", "daemonsets",
                                "deployments", "deployments/scale", "deployments/rollback",
                                "replicasets", "replicasets/scale"]),
        _rule(WRITE, ["autoscaling"], ["horizontalpodautoscalers"]),
        _rule(WRITE, ["batch"], ["jobs", "cronjobs"]),
        _rule(WRITE, ["extensions"], ["daemonsets", "deployments", "deployments/scale",
                                      "deployments/rollback", "ingresses", "replicasets",
                                      "replicasets/scale", "replicationcontrollers/scale",
                                      "networkpolicies"]),
        _rule(WRITE, ["policy"], ["poddisruptionbudgets"]),
        _rule(WRITE, ["networking.k8s.io"], ["ingresses", "networkpolicies"]),
        # view cannot read secrets or open streams; edit can
        _rule(READ, [""], ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy",
                           "secrets", "services/proxy"]),
    ]


def _admin_rules() -> list[dict]:
    return [
        _rule(READ + WRITE, [GROUP], ["rolebindings", "roles"]),
        _rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews"]),
    ]


def _node_rules() -> list[dict]:
    """What a kubelet needs; not bound to system:nodes (the Node authorizer decides), as
    upstream."""
    return [
        _rule(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
        _rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews",
                                                     "subjectaccessreviews"]),
        _rule(READ, [""], ["services"]),
        _rule(["create", "get", "list", "watch"], [""], ["nodes"]),
        _rule(["patch", "update"], [""], ["nodes/status"]),
        _rule(["patch", "update"], [""], ["nodes"]),
        _rule(["create", "patch", "update"], ["", "events.k8s.io"], ["events"]),
        _rule(READ, [""], ["pods"]),
        _rule(["create", "delete"], [""], ["pods"]),
        _rule(["patch", "update"], [""], ["pods/status"]),
        _rule(["create"], [""], ["pods/eviction"]),
        _rule(["get"], [""], ["configmaps", "secrets"]),
        _rule(["get"], [""], ["persistentvolumeclaims", "persistentvolumes"]),
        _rule(["get"], [""], ["endpoints"]),
        _rule(["create", "get", "list", "watch"], ["certificates.k8s.io"],
              ["certificatesigningrequests"]),
        _rule(["create", "delete", "get", "patch", "update"], ["coordination.k8s.io"],
              ["leases"]),
        _rule(["get"], ["storage.k8s.io"], ["volumeattachments"]),
        _rule(["create"], [""], ["serviceaccounts/token"]),
        _rule(["get", "patch", "update"], [""], ["persistentvolumeclaims/status"]),
        _rule(READ, ["storage.k8s.io"], ["csidrivers"]),
        _rule(["create", "delete", "get", "patch", "update"], ["storage.k8s.io"], ["csinodes"]),
        _rule(READ, ["node.k8s.io"], ["runtimeclasses"]),
    ]


def _aggregate_labels(*roles: str) -> dict[str, str]:
    return {f"{AGGREGATE_TO}{r}": "true" for r in roles}


def _cluster_role(name: str, rules: list[dict] | None = None, *,
                  labels: dict[str, str] | None = None,
                  aggregate_from: str | None = None) -> dict:
    obj: dict = {"apiVersion": f"{GROUP}/v1", "kind": "ClusterRole",
                 "metadata": {"name": name, "labels": {**_BOOTSTRAPPING, **(labels or {})},
                              "annotations": {AUTOUPDATE: "true"}},
                 "rules": rules or []}
    if aggregate_from:
        obj["aggregationRule"] = {"clusterRoleSelectors": [
            {"matchLabels": _aggregate_labels(aggregate_from)}]}
    return obj


def default_cluster_roles() -> list[dict]:
    get = ["get"]
    return [
        _cluster_role("cluster-admin", [_rule(["*"], ["*"], ["*"]), _urls(["*"], ["*"])]),
        _cluster_role("admin", aggregate_from="admin"),
        _cluster_role("edit", labels=_aggregate_labels("admin"), aggregate_from="edit"),
        _cluster_role("view", labels=_aggregate_labels("edit"), aggregate_from="view"),
        _cluster_role("system:aggregate-to-admin", _admin_rules(),
                      labels=_aggregate_labels("admin")),
        _cluster_role("system:aggregate-to-edit", _edit_rules(),
                      labels=_aggregate_labels("admin", "edit")),
        _cluster_role("system:aggregate-to-view", _view_rules(),
                      labels=_aggregate_labels("admin", "edit", "view")),
        # what metrics-server's manifest adds (K3s ships it): view, edit and admin read
        # metrics.k8s.io
        _cluster_role("system:aggregated-metrics-reader", [
            _rule(READ, ["metrics.k8s.io"], ["pods", "nodes"])],
            labels=_aggregate_labels("admin", "edit", "view")),
        _cluster_role("system:basic-user", [
            _rule(["create"], ["authorization.k8s.io"], ["selfsubjectaccessreviews",
                                                         "selfsubjectrulesreviews"]),
            _rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"])]),
        _cluster_role("system:discovery", [_urls(get, [
            "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
            "/openapi/*", "/readyz", "/version", "/version/"])]),
        _cluster_role("system:public-info-viewer", [_urls(get, [
            "/healthz", "/livez", "/readyz", "/version", "/version/"])]),
        _cluster_role("system:node", _node_rules()),
        _cluster_role("system:auth-delegator", [
            _rule(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
            _rule(["create"], ["authorization.k8s.io"], ["subjectaccessreviews"])]),
        _cluster_role("system:node-bootstrapper", [
            _rule(["create", "get", "list", "watch"], ["certificates.k8s.io"],
                  ["certificatesigningrequests"])]),
        _cluster_role("system:monitoring", [_urls(get, [
            "/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics", "/metrics/slis",
            "/readyz", "/readyz/*"])]),
        _cluster_role("system:service-account-issuer-discovery", [_urls(get, [
            "/.well-known/openid-configuration", "/.well-known/openid-configuration/",
            "/openid/v1/jwks", "/openid/v1/jwks/"])]),
    ]


def _binding(name: str, role: str, *groups: str) -> dict:
    return {"apiVersion": f"{GROUP}/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": dict(_BOOTSTRAPPING),
                         "annotations": {AUTOUPDATE: "true"}},
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": g} for g in groups]}


def default_cluster_role_bindings() -> list[dict]:
    return [
        _binding("cluster-admin", "cluster-admin", "system:masters"),
        _binding("system:basic-user", "system:basic-user", "system:authenticated"),
        _binding("system:discovery", "system:discovery", "system:authenticated"),
        _binding("system:public-info-viewer", "system:public-info-viewer",
                 "system:authenticated", "system:unauthenticated"),
        _binding("system:monitoring", "system:monitoring", "system:monitoring"),
        _binding("system:service-account-issuer-discovery",
                 "system:service-account-issuer-discovery", "system:serviceaccounts"),
    ]


# ---------------------------------------------------------------- reconciliation

def _merge_metadata(live: dict, want: dict) -> bool:
    md, wmd = live.setdefault("metadata", {}), want["metadata"]
    changed = False
    for key in ("labels", "annotations"):
        have = md.get(key)
        if not isinstance(have, dict):
            have = md[key] = {}
        for k, v in wmd[key].items():
            if k not in have:
                have[k] = v
                changed = True
    return changed


def _reconcile_role(live: dict, want: dict) -> bool:
    """Add to `live` what `want` has and it lacks; True when something was added."""
    changed = _merge_metadata(live, want)
    if "aggregationRule" in want:
        agg = live.setdefault("aggregationRule", {})
        selectors = agg.setdefault("clusterRoleSelectors", [])
        for sel in want["aggregationRule"]["clusterRoleSelectors"]:
            if sel not in selectors:
                selectors.append(sel)
                changed = True
        return changed  # the aggregation controller owns the rules
    missing = covers(live.get("rules") or [], want["rules"])
    if missing:
        live["rules"] = list(live.get("rules") or []) + compact(missing)
        changed = True
    return changed


def _reconcile_binding(live: dict, want: dict) -> bool:
    changed = _merge_metadata(live, want)
    subjects = live.setdefault("subjects", [])
    for subject in want["subjects"]:
        if not any(s.get("kind") == subject["kind"] and s.get("name") == subject["name"]
                   for s in subjects if isinstance(s, dict)):
            subjects.append(subject)
            changed = True
    return changed


async def _reconcile(registry: Registry, plural: str, wanted: list[dict], merge) -> None:
    res = registry.served(GROUP, plural)
    for want in wanted:
        name = want["metadata"]["name"]
        live = await registry.try_get(res, None, name)
        if live is None:
            try:
                await registry.create(res, None, want)
            except errors.StatusError as e:
                if e.code != 409:  # another server of the cluster created it first
                    raise
            continue
        annotations = (live.get("metadata") or {}).get("annotations") or {}
        if annotations.get(AUTOUPDATE) == "false":
            continue

        def add_missing(obj: dict, want=want) -> dict | None:
            return obj if merge(obj, want) else None
        await registry.update_with(res, None, name, add_missing)


async def reconcile_defaults(registry: Registry) -> None:
    """Create or complete the default ClusterRoles, then their bindings."""
    await _reconcile(registry, "clusterroles", default_cluster_roles(), _reconcile_role)
    await _reconcile(registry, "clusterrolebindings", default_cluster_role_bindings(),
                     _reconcile_binding)
    log.debug("default RBAC roles and bindings reconciled")
