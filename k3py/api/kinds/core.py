"""Core (v1) kinds: upstream defaults and validation for pods, services, secrets, configmaps,
namespaces, nodes, volumes, service accounts, replication controllers and the like."""

from __future__ import annotations

import base64
import re

from k3py.api import dualstack
from k3py.api import validation as v
from k3py.api.errors import Cause
from k3py.api.kinds.podspec import (
    default_pod_admission,
    default_pod_spec,
    pod_qos,
    validate_pod_spec,
    validate_template,
)
from k3py.api.kinds.registry import register
from k3py.api.selectors import label_selector_from_struct
from k3py.api.servicelb import SOURCE_RANGES_ANNOTATION, source_ranges

__all__ = ["POD_UPDATE_FORBIDDEN"]

POD_UPDATE_FORBIDDEN = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
    "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
    "set to 1 if it was previously negative)")


# ------------------------------------------------------------------ pods

def _default_pod(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    default_pod_spec(spec)
    if old is None:
        default_pod_admission(spec)
    status = obj.setdefault("status", {})
    if isinstance(status, dict):
        status.setdefault("phase", "Pending")
        if "qosClass" not in status:  # (worked out only when missing: every status write)
            status["qosClass"] = pod_qos(spec)


def _strip_mutable(spec: dict) -> dict:
    s = dict(spec)
    for k in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
        s.pop(k, None)
    for key in ("containers", "initContainers"):
        s[key] = [{k: val for k, val in c.items() if k != "image"} if isinstance(c, dict) else c
                  for c in s.get(key) or []]
    return s


def _validate_pod(obj: dict, old: dict | None) -> list[Cause]:
    if old is not None and obj.get("spec") is old.get("spec"):
        return []  # a status write keeps the stored spec itself: upstream validates no spec
    causes = validate_pod_spec(obj.get("spec"), "spec")
    if old is None or causes:
        return causes
    new_spec, old_spec = obj.get("spec") or {}, old.get("spec") or {}
    ns, os_ = _strip_mutable(new_spec), _strip_mutable(old_spec)
    if not old_spec.get("nodeName"):  # binding sets it once
        ns.pop("nodeName", None)
        os_.pop("nodeName", None)
    if ns != os_:
        causes.append(v.forbidden("spec", POD_UPDATE_FORBIDDEN))
    old_tol = old_spec.get("tolerations") or []
    new_tol = new_spec.get("tolerations") or []
    if any(t not in new_tol for t in old_tol):
        causes.append(v.forbidden("spec.tolerations", "existing toleration can not be "
                                                      "modified except its tolerationSeconds"))
    old_ads = old_spec.get("activeDeadlineSeconds")
    new_ads = new_spec.get("activeDeadlineSeconds")
    if old_ads is not None and (new_ads is None or new_ads > old_ads):
        causes.append(v.invalid_value("spec.activeDeadlineSeconds", new_ads,
                                      "must be less than or equal to previous value"))
    return causes


# ------------------------------------------------------------------ services

_SVC_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]


def _default_service(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("sessionAffinity", "None")
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec["sessionAffinity"] == "ClientIP":
        spec.setdefault("sessionAffinityConfig", {}).setdefault("clientIP", {}).setdefault(
            "timeoutSeconds", 10800)
    spec.setdefault("type", "ClusterIP")
    st = spec["type"]
    for p in spec.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
            if p.get("targetPort") in (None, 0, "") and "port" in p:
                p["targetPort"] = p["port"]
    if st in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if st in ("NodePort", "LoadBalancer", "ClusterIP"):
        spec.setdefault("internalTrafficPolicy", "Cluster")
        # ipFamilies and ipFamilyPolicy depend on the cluster's service CIDRs: the server's
        # ServiceAllocator sets them
        dualstack.normalize_cluster_ips(spec, (old or {}).get("spec"))
    if st == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    if old is None:
        obj.setdefault("status", {}).setdefault("loadBalancer", {})


def _validate_service(obj: dict, old: dict | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [v.required("spec")]
    causes: list[Cause] = []
    st = spec.get("type", "ClusterIP")
    if st not in _SVC_TYPES:
        causes.append(v.not_supported("spec.type", st, _SVC_TYPES))
    ports = spec.get("ports") or []
    if st == "ExternalName":
        en = spec.get("externalName") or ""
        if not en:
            causes.append(v.required("spec.externalName"))
        else:
            causes += [v.invalid_value("spec.externalName", en, m)
                       for m in v.dns1123_subdomain(en.rstrip("."))]
    elif not ports and spec.get("clusterIP") != "None":
        causes.append(v.required("spec.ports"))
    sa = spec.get("sessionAffinity")
    if sa and sa not in ("ClientIP", "None"):
        causes.append(v.not_supported("spec.sessionAffinity", sa, ["ClientIP", "None"]))
    names: set[str] = set()
    seen_ports: set[tuple] = set()
    for i, p in enumerate(ports):
        p = p if isinstance(p, dict) else {}
        pp = f"spec.ports[{i}]"
        name = p.get("name") or ""
        if len(ports) > 1 and not name:
            causes.append(v.required(f"{pp}.name"))
        elif name:
            causes += [v.invalid_value(f"{pp}.name", name, m) for m in v.dns1123_label(name)]
            if name in names:
                causes.append(v.duplicate(f"{pp}.name", name))
            names.add(name)
        port = p.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            causes.append(v.invalid_value(f"{pp}.port", port,
                                          "must be between 1 and 65535, inclusive"))
        proto = p.get("protocol", "TCP")
        if proto not in ("TCP", "UDP", "SCTP"):
            causes.append(v.not_supported(f"{pp}.protocol", proto, ["SCTP", "TCP", "UDP"]))
        if (port, proto) in seen_ports:
            causes.append(v.duplicate(pp, {"port": str(port), "protocol": proto}))
        seen_ports.add((port, proto))
        tp = p.get("targetPort")
        if isinstance(tp, int) and not 1 <= tp <= 65535:
            causes.append(v.invalid_value(f"{pp}.targetPort", tp,
                                          "must be between 1 and 65535, inclusive"))
        np_ = p.get("nodePort")
        if np_:
            if st not in ("NodePort", "LoadBalancer"):
                causes.append(v.forbidden(f"{pp}.nodePort",
                                          f"may not be used when `type` is '{st}'"))
            elif not isinstance(np_, int) or not 30000 <= np_ <= 32767:
                causes.append(v.invalid_value(f"{pp}.nodePort", np_,
                                              "provided port is not in the valid range. The "
                                              "range of valid ports is 30000-32767"))
    if st == "ExternalName":
        causes += dualstack.validate_external_name_families(spec)
    else:
        causes += dualstack.validate_cluster_ips(spec)
    if spec.get("selector") is not None:
        causes += v.check_labels(spec.get("selector"), "spec.selector")
    causes += _source_ranges(obj, st)
    if old is not None:
        causes += dualstack.validate_family_update(spec, old.get("spec") or {})
    return causes


_RANGES_MSG = "must be a list of IP ranges. For example, 10.240.0.0/24,10.250.0.0/24 "


def _source_ranges(obj: dict, st: str) -> list[Cause]:
    """spec.loadBalancerSourceRanges (or, without it, the older annotation) as upstream:
    LoadBalancer only, each a CIDR (spaces around it allowed)."""
    ranges = obj["spec"].get("loadBalancerSourceRanges") or []
    note = ((obj.get("metadata") or {}).get("annotations") or {}).get(SOURCE_RANGES_ANNOTATION)
    if not ranges and note is None:
        return []
    field = "spec.loadBalancerSourceRanges" if ranges else \
        f"metadata.annotations[{SOURCE_RANGES_ANNOTATION}]"
    if st != "LoadBalancer":
        return [v.forbidden(field, "may only be used when `type` is 'LoadBalancer'")]
    if not ranges:
        return [] if source_ranges(obj) is not None else \
            [v.invalid_value(field, note, _RANGES_MSG)]
    return [v.invalid_value(f"{field}[{i}]", r, _RANGES_MSG) for i, r in enumerate(ranges)
            if source_ranges({"spec": {"loadBalancerSourceRanges": [r]}}) is None]


# ------------------------------------------------------------------ config and secrets

_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_KEY_MSG = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. "
            "'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is "
            "'[-._a-zA-Z0-9]+')")


def _config_keys(data: object, field: str) -> list[Cause]:
    if data is None:
        return []
    if not isinstance(data, dict):
        return [v.invalid_value(field, data, "must be a map")]
    causes = []
    for k in data:
        if len(k) > 253:
            causes.append(v.invalid_value(field, k, "must be no more than 253 characters"))
        if not _KEY.match(k):
            causes.append(v.invalid_value(field, k, _KEY_MSG))
        elif k in (".", "..") or k.startswith(".."):
            causes.append(v.invalid_value(field, k, "must not be '.'" if k == "." else
                                          "must not be '..'" if k == ".." else
                                          "must not start with '..'"))
    return causes


def _immutable_data(obj: dict, old: dict | None, fields: tuple[str, ...]) -> list[Cause]:
    if old is None or not old.get("immutable"):
        return []
    causes = []
    if not obj.get("immutable"):
        causes.append(v.forbidden("immutable", "field is immutable when `immutable` is set"))
    for f in fields:
        if (obj.get(f) or {}) != (old.get(f) or {}):
            causes.append(v.forbidden(f, "field is immutable when `immutable` is set"))
    return causes


MAX_CONFIG_BYTES = 1024 * 1024  # upstream's MaxSecretSize, for ConfigMaps and Secrets alike


def _values(data: object) -> list:
    return list(data.values()) if isinstance(data, dict) else []


def _validate_configmap(obj: dict, old: dict | None) -> list[Cause]:
    causes = _config_keys(obj.get("data"), "data") + _config_keys(obj.get("binaryData"),
                                                                  "binaryData")
    for k in set(obj.get("data") or {}) & set(obj.get("binaryData") or {}):
        causes.append(v.invalid_value("data", k, "duplicate of key present in binaryData"))
    total = sum(len(str(x)) for x in _values(obj.get("data"))) + sum(
        len(str(x)) * 3 // 4 for x in _values(obj.get("binaryData")))
    if total > MAX_CONFIG_BYTES:  # upstream names the whole object: field ""
        causes.append(v.too_long("", MAX_CONFIG_BYTES))
    return causes + _immutable_data(obj, old, ("data", "binaryData"))


def _default_secret(obj: dict, old: dict | None) -> None:
    if not obj.get("type"):
        obj["type"] = "Opaque"
    sd = obj.pop("stringData", None)
    if isinstance(sd, dict):
        data = obj.get("data")
        if not isinstance(data, dict):
            data = obj["data"] = {}
        for k, val in sd.items():
            data[k] = base64.b64encode(str(val).encode()).decode()


_SECRET_KEYS = {"kubernetes.io/service-account-token": (),
                "kubernetes.io/dockercfg": (".dockercfg",),
                "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
                "kubernetes.io/basic-auth": (), "kubernetes.io/ssh-auth": ("ssh-privatekey",),
                "kubernetes.io/tls": ("tls.crt", "tls.key")}


def _validate_secret(obj: dict, old: dict | None) -> list[Cause]:
    causes = _config_keys(obj.get("data"), "data")
    st = obj.get("type") or "Opaque"
    for k in _SECRET_KEYS.get(st, ()):
        if k not in (obj.get("data") or {}):
            causes.append(v.required(f"data[{k}]"))
    total = sum(len(str(x)) * 3 // 4 for x in _values(obj.get("data")))
    if total > MAX_CONFIG_BYTES:
        causes.append(v.too_long("data", MAX_CONFIG_BYTES))
    if old is not None and (old.get("type") or "Opaque") != st:
        causes.append(v.invalid_value("type", st, "field is immutable"))
    return causes + _immutable_data(obj, old, ("data",))


# ------------------------------------------------------------------ cluster objects

def _default_namespace(obj: dict, old: dict | None) -> None:
    name = (obj.get("metadata") or {}).get("name")
    if name:
        labels = obj["metadata"].get("labels")
        if not isinstance(labels, dict):
            labels = obj["metadata"]["labels"] = {}
        labels["kubernetes.io/metadata.name"] = name


def _validate_namespace(obj: dict, old: dict | None) -> list[Cause]:
    causes = []
    for i, f in enumerate((obj.get("spec") or {}).get("finalizers") or []):
        causes += [v.invalid_value(f"spec.finalizers[{i}]", f, m) for m in v.qualified_name(f)]
    return causes


def _default_node(obj: dict, old: dict | None) -> None:
    md = obj.setdefault("metadata", {})
    if md.get("name"):
        labels = md.get("labels")
        if not isinstance(labels, dict):
            labels = md["labels"] = {}
        labels.setdefault("kubernetes.io/hostname", md["name"])


def _validate_node(obj: dict, old: dict | None) -> list[Cause]:
    causes: list[Cause] = []
    for i, t in enumerate((obj.get("spec") or {}).get("taints") or []):
        t = t if isinstance(t, dict) else {}
        if not t.get("key"):
            causes.append(v.required(f"spec.taints[{i}].key"))
        eff = t.get("effect")
        if not eff:
            causes.append(v.required(f"spec.taints[{i}].effect"))
        elif eff not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            causes.append(v.not_supported(f"spec.taints[{i}].effect", eff,
                                          ["NoExecute", "NoSchedule", "PreferNoSchedule"]))
    return causes


_ACCESS_MODES = ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"]


def _default_pvc(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("volumeMode", "Filesystem")
    if old is None:
        obj.setdefault("status", {}).setdefault("phase", "Pending")


def _validate_pvc(obj: dict, old: dict | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [v.required("spec")]
    causes: list[Cause] = []
    modes = spec.get("accessModes") or []
    if not modes:
        causes.append(v.required("spec.accessModes", "at least 1 access mode is required"))
    for m in modes:
        if m not in _ACCESS_MODES:
            causes.append(v.not_supported("spec.accessModes", m, _ACCESS_MODES))
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    if storage is None and not spec.get("dataSourceRef"):
        causes.append(v.required("spec.resources[storage]"))
    if old is not None:
        ospec = dict(old.get("spec") or {})
        nspec = dict(spec)
        for s in (ospec, nspec):
            s.pop("resources", None)
            s.pop("volumeAttributesClassName", None)
        if not ospec.get("volumeName"):
            nspec.pop("volumeName", None)
            ospec.pop("volumeName", None)
        if nspec != ospec:
            causes.append(v.forbidden("spec", "spec is immutable after creation except "
                                              "resources.requests and "
                                              "volumeAttributesClassName for bound claims"))
    return causes


def _default_pv(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
    spec.setdefault("volumeMode", "Filesystem")
    if old is None:
        obj.setdefault("status", {}).setdefault("phase", "Pending")


def _default_rc(obj: dict, old: dict | None) -> None:
    spec = obj.setdefault("spec", {})
    tmpl = spec.get("template")
    labels = ((tmpl or {}).get("metadata") or {}).get("labels") if isinstance(tmpl, dict) \
        else None
    if labels:
        if not spec.get("selector"):
            spec["selector"] = dict(labels)
        md = obj.setdefault("metadata", {})
        if not md.get("labels"):
            md["labels"] = dict(labels)
    spec.setdefault("replicas", 1)
    spec.setdefault("minReadySeconds", 0)
    if isinstance(tmpl, dict) and isinstance(tmpl.setdefault("spec", {}), dict):
        default_pod_spec(tmpl["spec"])


def _validate_rc(obj: dict, old: dict | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [v.required("spec")]
    causes: list[Cause] = []
    r = spec.get("replicas")
    if r is not None and (not isinstance(r, int) or r < 0):
        causes.append(v.invalid_value("spec.replicas", r, "must be greater than or equal to 0"))
    sel = spec.get("selector") or {}
    if not sel:
        causes.append(v.required("spec.selector"))
    causes += v.check_labels(sel, "spec.selector")
    tmpl = spec.get("template")
    if not isinstance(tmpl, dict):
        return causes + [v.required("spec.template")]
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    if sel and not label_selector_from_struct({"matchLabels": sel}).matches(labels):
        causes.append(v.invalid_value("spec.template.metadata.labels", labels,
                                      "`selector` does not match template `labels`"))
    causes += validate_template(tmpl, "spec.template")
    rp = (tmpl.get("spec") or {}).get("restartPolicy")
    if rp and rp != "Always":
        causes.append(v.not_supported("spec.template.spec.restartPolicy", rp, ["Always"]))
    return causes


def _default_podtemplate(obj: dict, old: dict | None) -> None:
    tmpl = obj.setdefault("template", {})
    if isinstance(tmpl, dict) and isinstance(tmpl.setdefault("spec", {}), dict):
        default_pod_spec(tmpl["spec"])


def _validate_event(obj: dict, old: dict | None) -> list[Cause]:
    inv = obj.get("involvedObject") or obj.get("regarding")
    causes = []
    if obj.get("type") and obj["type"] not in ("Normal", "Warning"):
        causes.append(v.not_supported("type", obj["type"], ["Normal", "Warning"]))
    if not isinstance(inv, dict):
        causes.append(v.required("involvedObject"))
    return causes


register("", "Pod", default=_default_pod, validate=_validate_pod, generation=True,
         status_keeps_metadata=("ownerReferences",))
register("", "Service", default=_default_service, validate=_validate_service,
         name_check=v.dns1035_label)
register("", "ConfigMap", validate=_validate_configmap,
         spec_fields=("data", "binaryData", "immutable"))
register("", "Secret", default=_default_secret, validate=_validate_secret,
         spec_fields=("data", "type", "immutable"))
register("", "Namespace", default=_default_namespace, validate=_validate_namespace,
         name_check=v.dns1123_label)
register("", "Node", default=_default_node, validate=_validate_node)
register("", "PersistentVolumeClaim", default=_default_pvc, validate=_validate_pvc)
register("", "PersistentVolume", default=_default_pv)
register("", "ReplicationController", default=_default_rc, validate=_validate_rc,
         generation=True, status_keeps_metadata=("labels",))
register("", "PodTemplate", default=_default_podtemplate, generation=True,
         validate=lambda o, old: validate_template(o.get("template"), "template"),
         spec_fields=("template",))
register("", "Event", validate=_validate_event)
register("events.k8s.io", "Event", validate=_validate_event)
