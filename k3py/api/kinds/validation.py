"""Per-kind validation with upstream's field paths and messages (the common cases users hit:
names, labels, pod containers, workload selectors and replicas, services, immutability)."""

from __future__ import annotations

from collections.abc import Callable

from k3py.api import validation as v
from k3py.api.errors import Cause, field_cause
from k3py.api.selectors import label_selector_from_struct

__all__ = ["VALIDATORS", "name_check_for"]

_LABEL_NAMED = {("", "Namespace"), ("", "Service")}


def name_check_for(group: str, kind: str):
    if (group, kind) == ("", "Namespace"):
        return v.dns1123_label
    if (group, kind) == ("", "Service"):
        return v.dns1035_label
    if kind in ("ConfigMap", "Secret", "Event", "Lease") or group.startswith("rbac."):
        return _path_segment
    return v.dns1123_subdomain


def _path_segment(name: str) -> list[str]:
    if name in (".", ".."):
        return [f'may not be \'{name}\'']
    if "/" in name or "%" in name:
        return ["may not contain '/'" if "/" in name else "may not contain '%'"]
    return []


def _containers(containers: object, path: str, required: bool) -> list[Cause]:
    causes: list[Cause] = []
    if not containers:
        return [v.required(path)] if required else []
    if not isinstance(containers, list):
        return [v.invalid_value(path, containers, "must be a list")]
    seen: set[str] = set()
    for i, c in enumerate(containers):
        p = f"{path}[{i}]"
        if not isinstance(c, dict):
            causes.append(v.invalid_value(p, c, "must be an object"))
            continue
        name = c.get("name") or ""
        if not name:
            causes.append(v.required(f"{p}.name"))
        else:
            for msg in v.dns1123_label(name):
                causes.append(v.invalid_value(f"{p}.name", name, msg))
            if name in seen:
                causes.append(v.duplicate(f"{p}.name", name))
            seen.add(name)
        if not c.get("image"):
            causes.append(v.required(f"{p}.image"))
        pull = c.get("imagePullPolicy")
        if pull and pull not in ("Always", "IfNotPresent", "Never"):
            causes.append(v.not_supported(f"{p}.imagePullPolicy", pull,
                                          ["Always", "IfNotPresent", "Never"]))
        for j, port in enumerate(c.get("ports") or []):
            cp = (port or {}).get("containerPort")
            if not isinstance(cp, int) or not 1 <= cp <= 65535:
                causes.append(v.invalid_value(f"{p}.ports[{j}].containerPort", cp,
                                              "must be between 1 and 65535, inclusive"))
            proto = (port or {}).get("protocol")
            if proto and proto not in ("TCP", "UDP", "SCTP"):
                causes.append(v.not_supported(f"{p}.ports[{j}].protocol", proto,
                                              ["SCTP", "TCP", "UDP"]))
        for j, e in enumerate(c.get("env") or []):
            if not isinstance(e, dict) or not e.get("name"):
                causes.append(v.required(f"{p}.env[{j}].name"))
    return causes


def validate_pod_spec(spec: object, path: str, template: bool = False) -> list[Cause]:
    if not isinstance(spec, dict):
        return [v.required(path)]
    causes = _containers(spec.get("containers"), f"{path}.containers", True)
    causes += _containers(spec.get("initContainers"), f"{path}.initContainers", False)
    rp = spec.get("restartPolicy")
    if rp and rp not in ("Always", "OnFailure", "Never"):
        causes.append(v.not_supported(f"{path}.restartPolicy", rp,
                                      ["Always", "OnFailure", "Never"]))
    dp = spec.get("dnsPolicy")
    if dp and dp not in ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"):
        causes.append(v.not_supported(f"{path}.dnsPolicy", dp,
                                      ["ClusterFirst", "ClusterFirstWithHostNet", "Default",
                                       "None"]))
    names: set[str] = set()
    for i, vol in enumerate(spec.get("volumes") or []):
        n = (vol or {}).get("name")
        if not n:
            causes.append(v.required(f"{path}.volumes[{i}].name"))
        elif n in names:
            causes.append(v.duplicate(f"{path}.volumes[{i}].name", n))
        names.add(n)
    return causes


def _pod(obj: dict, old: dict | None) -> list[Cause]:
    causes = validate_pod_spec(obj.get("spec"), "spec")
    if old is not None:
        causes += _pod_update(obj, old)
    return causes


def _pod_update(obj: dict, old: dict) -> list[Cause]:
    new_spec, old_spec = dict(obj.get("spec") or {}), dict(old.get("spec") or {})
    for s in (new_spec, old_spec):
        s.pop("activeDeadlineSeconds", None)
        s.pop("tolerations", None)
        s.pop("terminationGracePeriodSeconds", None)
        s["containers"] = [{k: val for k, val in (c or {}).items() if k != "image"}
                           for c in s.get("containers") or []]
        s["initContainers"] = [{k: val for k, val in (c or {}).items() if k != "image"}
                               for c in s.get("initContainers") or []]
    if not old_spec.get("nodeName"):
        new_spec.pop("nodeName", None)
        old_spec.pop("nodeName", None)
    if new_spec != old_spec:
        return [field_cause("spec", "Forbidden: pod updates may not change fields other than "
                            "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                            "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions "
                            "to existing tolerations),`spec.terminationGracePeriodSeconds` "
                            "(allow it to be set to 1 if it was previously negative)",
                            "FieldValueForbidden")]
    return []


def _selector_workload(obj: dict, old: dict | None, *, replicas: bool = True,
                       selector_required: bool = True) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [v.required("spec")]
    causes: list[Cause] = []
    if replicas and "replicas" in spec:
        r = spec.get("replicas")
        if not isinstance(r, int) or isinstance(r, bool) or r < 0:
            causes.append(v.invalid_value("spec.replicas", r,
                                          "must be greater than or equal to 0"))
    sel = spec.get("selector")
    tmpl = spec.get("template") or {}
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    if not sel:
        if selector_required:
            causes.append(v.required("spec.selector"))
    else:
        try:
            matcher = label_selector_from_struct(sel)
        except Exception as e:  # noqa: BLE001
            causes.append(v.invalid_value("spec.selector", sel, str(e)))
        else:
            if not sel.get("matchLabels") and not sel.get("matchExpressions"):
                causes.append(v.invalid_value("spec.selector", "", "empty selector is invalid "
                                              "for deployment"))
            elif not matcher.matches(labels):
                causes.append(v.invalid_value("spec.template.metadata.labels", labels,
                                              "`selector` does not match template `labels`"))
        if old is not None and (old.get("spec") or {}).get("selector") != sel:
            causes.append(v.invalid_value("spec.selector", sel, "field is immutable"))
    causes += v.check_labels(labels, "spec.template.metadata.labels")
    causes += validate_pod_spec(tmpl.get("spec"), "spec.template.spec", template=True)
    rp = (tmpl.get("spec") or {}).get("restartPolicy")
    if rp and rp != "Always" and tmpl.get("spec"):
        causes.append(v.not_supported("spec.template.spec.restartPolicy", rp, ["Always"]))
    return causes


def _deployment(obj: dict, old: dict | None) -> list[Cause]:
    causes = _selector_workload(obj, old)
    strategy = ((obj.get("spec") or {}).get("strategy") or {}).get("type")
    if strategy and strategy not in ("RollingUpdate", "Recreate"):
        causes.append(v.not_supported("spec.strategy.type", strategy,
                                      ["Recreate", "RollingUpdate"]))
    return causes


def _job(obj: dict, old: dict | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [v.required("spec")]
    causes: list[Cause] = []
    for f in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds"):
        val = spec.get(f)
        if val is not None and (not isinstance(val, int) or val < 0):
            causes.append(v.invalid_value(f"spec.{f}", val, "must be greater than or equal to 0"))
    tmpl = spec.get("template") or {}
    causes += validate_pod_spec(tmpl.get("spec"), "spec.template.spec", template=True)
    rp = (tmpl.get("spec") or {}).get("restartPolicy")
    if rp not in ("OnFailure", "Never"):
        causes.append(v.not_supported("spec.template.spec.restartPolicy", rp or "",
                                      ["OnFailure", "Never"]))
    return causes


def _cronjob(obj: dict, old: dict | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [v.required("spec")]
    causes: list[Cause] = []
    if not spec.get("schedule"):
        causes.append(v.required("spec.schedule"))
    cp = spec.get("concurrencyPolicy")
    if cp and cp not in ("Allow", "Forbid", "Replace"):
        causes.append(v.not_supported("spec.concurrencyPolicy", cp,
                                      ["Allow", "Forbid", "Replace"]))
    return causes


def _service(obj: dict, old: dict | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [v.required("spec")]
    causes: list[Cause] = []
    st = spec.get("type", "ClusterIP")
    types = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
    if st not in types:
        causes.append(v.not_supported("spec.type", st, types))
    ports = spec.get("ports") or []
    if not ports and st != "ExternalName" and spec.get("clusterIP") != "None":
        causes.append(v.required("spec.ports"))
    names: set[str] = set()
    for i, p in enumerate(ports):
        p = p or {}
        port = p.get("port")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            causes.append(v.invalid_value(f"spec.ports[{i}].port", port,
                                          "must be between 1 and 65535, inclusive"))
        if len(ports) > 1 and not p.get("name"):
            causes.append(v.required(f"spec.ports[{i}].name"))
        if p.get("name"):
            if p["name"] in names:
                causes.append(v.duplicate(f"spec.ports[{i}].name", p["name"]))
            names.add(p["name"])
        np = p.get("nodePort")
        if np and (not isinstance(np, int) or not 1 <= np <= 65535):
            causes.append(v.invalid_value(f"spec.ports[{i}].nodePort", np,
                                          "must be between 1 and 65535, inclusive"))
        if np and st not in ("NodePort", "LoadBalancer"):
            causes.append(field_cause(f"spec.ports[{i}].nodePort",
                                      f"Forbidden: may not be used when `type` is '{st}'",
                                      "FieldValueForbidden"))
    if old is not None:
        old_ip = (old.get("spec") or {}).get("clusterIP")
        if old_ip and spec.get("clusterIP") and spec["clusterIP"] != old_ip:
            causes.append(v.invalid_value("spec.clusterIPs[0]", spec["clusterIP"],
                                          "may not change once set"))
    return causes


def _configmap(obj: dict, old: dict | None) -> list[Cause]:
    import re
    causes: list[Cause] = []
    key_re = re.compile(r"^[-._a-zA-Z0-9]+$")
    for section in ("data", "binaryData"):
        data = obj.get(section) or {}
        if not isinstance(data, dict):
            causes.append(v.invalid_value(section, data, "must be a map"))
            continue
        for k in data:
            if not key_re.match(k) or len(k) > 253:
                causes.append(v.invalid_value(f"{section}", k, "a valid config key must consist "
                              "of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
                              "'KEY_NAME',  or 'key-name', regex used for validation is "
                              "'[-._a-zA-Z0-9]+')"))
    if old is not None and old.get("immutable") and (
            obj.get("data") != old.get("data") or obj.get("binaryData") != old.get("binaryData")):
        causes.append(field_cause("data", "Forbidden: field is immutable when `immutable` is set",
                                  "FieldValueForbidden"))
    return causes


VALIDATORS: dict[tuple[str, str], Callable[[dict, dict | None], list[Cause]]] = {
    ("", "Pod"): _pod,
    ("apps", "Deployment"): _deployment,
    ("apps", "ReplicaSet"): _selector_workload,
    ("apps", "DaemonSet"): lambda o, old: _selector_workload(o, old, replicas=False),
    ("apps", "StatefulSet"): _selector_workload,
    ("", "ReplicationController"): lambda o, old: _selector_workload(o, old,
                                                                     selector_required=False),
    ("batch", "Job"): _job,
    ("batch", "CronJob"): _cronjob,
    ("", "Service"): _service,
    ("", "ConfigMap"): _configmap,
    ("", "Secret"): _configmap,
}
