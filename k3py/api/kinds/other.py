"""Networking, storage, coordination, scheduling, RBAC and policy kinds: the upstream defaults
and validation users hit with kubectl (ingress paths, storage class policies, ...)."""

from __future__ import annotations

from k3py.api import validation as v
from k3py.api.errors import Cause
from k3py.api.kinds.registry import register

__all__: list[str] = []

_PATH_TYPES = ["Exact", "ImplementationSpecific", "Prefix"]


def _validate_backend(b: object, path: str) -> list[Cause]:
    if not isinstance(b, dict):
        return []
    svc, res = b.get("service"), b.get("resource")
    if svc and res:
        return [v.invalid_value(path, "", "cannot set both resource and service backends")]
    if not svc and not res:
        return [v.invalid_value(path, "", "one backend (service or resource) must be "
                                          "specified")]
    causes: list[Cause] = []
    if isinstance(svc, dict):
        if not svc.get("name"):
            causes.append(v.required(f"{path}.service.name"))
        port = svc.get("port") or {}
        if port.get("name") and port.get("number"):
            causes.append(v.invalid_value(f"{path}.service.port", port.get("name"),
                                          "cannot set both port name & port number"))
        elif not port.get("name") and not port.get("number"):
            causes.append(v.required(f"{path}.service.port",
                                     "port name or number is required"))
    return causes


def _validate_ingress(obj: dict, old: dict | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [v.required("spec")]
    causes = _validate_backend(spec.get("defaultBackend"), "spec.defaultBackend") \
        if spec.get("defaultBackend") else []
    rules = spec.get("rules") or []
    if not rules and not spec.get("defaultBackend"):
        causes.append(v.invalid_value("spec.rules", [],
                                      "either `defaultBackend` or `rules` must be specified"))
    for i, rule in enumerate(rules):
        rule = rule if isinstance(rule, dict) else {}
        host = rule.get("host") or ""
        if host:
            check = host[2:] if host.startswith("*.") else host
            causes += [v.invalid_value(f"spec.rules[{i}].host", host, m)
                       for m in v.dns1123_subdomain(check)]
        http = rule.get("http")
        if not isinstance(http, dict):
            continue
        paths = http.get("paths") or []
        if not paths:
            causes.append(v.required(f"spec.rules[{i}].http.paths"))
        for j, p in enumerate(paths):
            p = p if isinstance(p, dict) else {}
            pp = f"spec.rules[{i}].http.paths[{j}]"
            pt = p.get("pathType")
            if not pt:
                causes.append(v.required(f"{pp}.pathType", "pathType must be specified"))
            elif pt not in _PATH_TYPES:
                causes.append(v.not_supported(f"{pp}.pathType", pt, _PATH_TYPES))
            elif pt in ("Exact", "Prefix") and not str(p.get("path") or "").startswith("/"):
                causes.append(v.invalid_value(f"{pp}.path", p.get("path") or "",
                                              "must be an absolute path"))
            causes += _validate_backend(p.get("backend"), f"{pp}.backend")
    return causes


def _default_network_policy(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if not spec.get("policyTypes"):
        types = ["Ingress"]
        if spec.get("egress") is not None:
            types.append("Egress")
        spec["policyTypes"] = types
    for direction, peers in (("ingress", "ports"), ("egress", "ports")):
        for rule in spec.get(direction) or []:
            for p in (rule or {}).get(peers) or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")


def _default_storage_class(obj: dict, old: dict | None) -> None:
    obj.setdefault("reclaimPolicy", "Delete")
    obj.setdefault("volumeBindingMode", "Immediate")


def _validate_storage_class(obj: dict, old: dict | None) -> list[Cause]:
    causes: list[Cause] = []
    if not obj.get("provisioner"):
        causes.append(v.required("provisioner"))
    rp = obj.get("reclaimPolicy")
    if rp and rp not in ("Delete", "Retain"):
        causes.append(v.not_supported("reclaimPolicy", rp, ["Delete", "Retain"]))
    vbm = obj.get("volumeBindingMode")
    if vbm and vbm not in ("Immediate", "WaitForFirstConsumer"):
        causes.append(v.not_supported("volumeBindingMode", vbm,
                                      ["Immediate", "WaitForFirstConsumer"]))
    if old is not None:
        for f in ("provisioner", "parameters", "reclaimPolicy", "volumeBindingMode"):
            if obj.get(f) != old.get(f):
                causes.append(v.forbidden(f, "updates to " + f + " are forbidden."))
    return causes


def _default_priority_class(obj: dict, old: dict | None) -> None:
    obj.setdefault("preemptionPolicy", "PreemptLowerPriority")


def _validate_priority_class(obj: dict, old: dict | None) -> list[Cause]:
    val = obj.get("value")
    if not isinstance(val, int):
        return [v.required("value")]
    if val > 1000000000 and not (obj.get("metadata") or {}).get("name", "").startswith(
            "system-"):
        return [v.forbidden("value", "maximum allowed value of a user defined priority is "
                                     "1000000000")]
    if old is not None and val != old.get("value"):
        return [v.forbidden("value", "may not be changed in an update.")]
    return []


def _validate_lease(obj: dict, old: dict | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    for f in ("leaseDurationSeconds", "leaseTransitions"):
        val = spec.get(f)
        if val is not None and (not isinstance(val, int) or val < (1 if f[0] == "l" and
                                                                   f[5] == "D" else 0)):
            bound = "greater than 0" if f == "leaseDurationSeconds" else \
                "greater than or equal to 0"
            causes.append(v.invalid_value(f"spec.{f}", val, f"must be {bound}"))
    return causes


def _validate_role_binding(obj: dict, old: dict | None) -> list[Cause]:
    ref = obj.get("roleRef") or {}
    causes: list[Cause] = []
    if not ref.get("name"):
        causes.append(v.required("roleRef.name"))
    if ref.get("kind") not in ("Role", "ClusterRole"):
        causes.append(v.not_supported("roleRef.kind", ref.get("kind") or "",
                                      ["ClusterRole", "Role"]))
    if old is not None and ref != (old.get("roleRef") or {}):
        causes.append(v.invalid_value("roleRef", ref, "cannot change roleRef"))
    for i, s in enumerate(obj.get("subjects") or []):
        s = s if isinstance(s, dict) else {}
        if not s.get("name"):
            causes.append(v.required(f"subjects[{i}].name"))
        if s.get("kind") not in ("ServiceAccount", "User", "Group"):
            causes.append(v.not_supported(f"subjects[{i}].kind", s.get("kind") or "",
                                          ["Group", "ServiceAccount", "User"]))
    return causes


def _validate_crb(obj: dict, old: dict | None) -> list[Cause]:
    causes = _validate_role_binding(obj, old)
    if (obj.get("roleRef") or {}).get("kind") == "Role":
        causes = [c for c in causes if c["field"] != "roleRef.kind"]
        causes.append(v.not_supported("roleRef.kind", "Role", ["ClusterRole"]))
    return causes


def _validate_pdb(obj: dict, old: dict | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        return [v.invalid_value("spec", spec, "minAvailable and maxUnavailable cannot be both "
                                              "set")]
    return []


register("networking.k8s.io", "Ingress", validate=_validate_ingress, generation=True)
register("networking.k8s.io", "IngressClass", generation=True)
register("networking.k8s.io", "NetworkPolicy", default=_default_network_policy,
         generation=True)
register("discovery.k8s.io", "EndpointSlice", generation=True,
         spec_fields=("endpoints", "ports", "addressType"))
register("storage.k8s.io", "StorageClass", default=_default_storage_class,
         validate=_validate_storage_class)
register("scheduling.k8s.io", "PriorityClass", default=_default_priority_class,
         validate=_validate_priority_class)
register("coordination.k8s.io", "Lease", validate=_validate_lease)
register("policy", "PodDisruptionBudget", validate=_validate_pdb, generation=True)
register("apiextensions.k8s.io", "CustomResourceDefinition", generation=True)
register("admissionregistration.k8s.io", "MutatingWebhookConfiguration", generation=True)
register("admissionregistration.k8s.io", "ValidatingWebhookConfiguration", generation=True)
for _kind in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"):
    register("rbac.authorization.k8s.io", _kind, name_check=v.path_segment_name)
register("rbac.authorization.k8s.io", "RoleBinding", validate=_validate_role_binding)
register("rbac.authorization.k8s.io", "ClusterRoleBinding", validate=_validate_crb)
