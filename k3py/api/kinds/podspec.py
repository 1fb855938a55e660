"""Pod spec defaulting and validation shared by pods and every pod template (deployments,
jobs, ...), after upstream's core/v1 defaults.go and core validation.go."""

from __future__ import annotations

import functools
import re
from decimal import Decimal, InvalidOperation

from k3py.api import validation as v
from k3py.api.errors import Cause, field_cause

__all__ = ["default_pod_spec", "default_pod_admission", "pod_qos", "validate_pod_spec",
           "validate_template", "parse_quantity"]

NOT_READY_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
     "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
     "tolerationSeconds": 300},
)
_VOLUME_MODES = ("secret", "configMap", "downwardAPI", "projected")


def _image_tag(image: str) -> str:
    """The tag parsers.ParseImageName finds: "latest" when neither tag nor digest is given."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rpartition(":")[2] if ":" in last else ""
    if not tag and not digest:
        return "latest"
    return tag


def _default_probe(probe: object) -> None:
    if not isinstance(probe, dict):
        return
    for k, val in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                   ("failureThreshold", 3)):
        probe.setdefault(k, val)
    if isinstance(probe.get("httpGet"), dict):
        probe["httpGet"].setdefault("path", "/")
        probe["httpGet"].setdefault("scheme", "HTTP")


def _default_container(c: dict, host_network: bool) -> None:
    if not c.get("imagePullPolicy"):
        c["imagePullPolicy"] = "Always" if _image_tag(str(c.get("image") or "")) == "latest" \
            else "IfNotPresent"
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for p in c.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
            if host_network and "hostPort" not in p and "containerPort" in p:
                p["hostPort"] = p["containerPort"]
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        _default_probe(c.get(name))
    for e in c.get("env") or []:
        vf = e.get("valueFrom") if isinstance(e, dict) else None
        if isinstance(vf, dict) and isinstance(vf.get("fieldRef"), dict):
            vf["fieldRef"].setdefault("apiVersion", "v1")


def default_pod_spec(spec: dict) -> None:
    """SetDefaults_PodSpec and the nested container/volume/probe defaults (pods and templates)."""
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("securityContext", {})
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    host_net = bool(spec.get("hostNetwork"))
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                _default_container(c, host_net)
    for vol in spec.get("volumes") or []:
        if not isinstance(vol, dict):
            continue
        if set(vol) <= {"name"}:
            vol["emptyDir"] = {}
        if "emptyDir" in vol and vol["emptyDir"] is None:
            vol["emptyDir"] = {}
        for kind in _VOLUME_MODES:
            if isinstance(vol.get(kind), dict):
                vol[kind].setdefault("defaultMode", 420)
        if isinstance(vol.get("hostPath"), dict):
            vol["hostPath"].setdefault("type", "")


def default_pod_admission(spec: dict) -> None:
    """What a Pod (not a template) gets from SetDefaults_Pod and the default admission chain
    (ServiceAccount, Priority, DefaultTolerationSeconds)."""
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            res = c.get("resources") if isinstance(c, dict) else None
            if isinstance(res, dict) and isinstance(res.get("limits"), dict):
                req = res.setdefault("requests", {})
                for r, q in res["limits"].items():
                    req.setdefault(r, q)
    spec.setdefault("enableServiceLinks", True)
    sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = sa
    spec["serviceAccount"] = sa
    if not spec.get("priorityClassName"):
        spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    for t in NOT_READY_TOLERATIONS:
        if not any(isinstance(x, dict) and (x.get("key") in (t["key"], None, "")) and
                   x.get("effect") in ("NoExecute", None, "") for x in tolerations):
            tolerations.append(dict(t))


_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
           "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": 1,
           "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QTY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_quantity(q: object) -> Decimal | None:
    return _parse_quantity_text(str(q).strip())


# the same few quantities ("100m", "128Mi") come in every pod, and a Decimal is immutable
@functools.lru_cache(maxsize=4096)
def _parse_quantity_text(text: str) -> Decimal | None:
    m = _QTY.match(text)
    if not m:
        return None
    try:
        base = Decimal(m.group(1) + (m.group(2) or ""))
    except InvalidOperation:
        return None
    return base * Decimal(_SUFFIX[m.group(3) or ""])


def pod_qos(spec: dict) -> str:
    """qos.GetPodQOS over cpu and memory of all containers."""
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    containers = [c for key in ("containers", "initContainers")
                  for c in spec.get(key) or [] if isinstance(c, dict)]
    for c in containers:
        res = c.get("resources") or {}
        for r, q in (res.get("requests") or {}).items():
            if r in ("cpu", "memory") and (n := parse_quantity(q)) and n != 0:
                requests[r] = requests.get(r, Decimal(0)) + n
        seen = set()
        for r, q in (res.get("limits") or {}).items():
            if r in ("cpu", "memory") and (n := parse_quantity(q)) and n != 0:
                seen.add(r)
                limits[r] = limits.get(r, Decimal(0)) + n
        if seen != {"cpu", "memory"}:
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and all(limits.get(r) == q for r, q in requests.items()) and \
            set(requests) == set(limits):
        return "Guaranteed"
    return "Burstable"


# ------------------------------------------------------------------ validation

_PORT_NAME = re.compile(r"^[-a-z0-9]+$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def _port(value: object, path: str, allow_zero: bool = False) -> list[Cause]:
    if allow_zero and value in (None, 0):
        return []
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        return [v.invalid_value(path, value, "must be between 1 and 65535, inclusive")]
    return []


def _port_name(name: str, path: str) -> list[Cause]:
    msgs = []
    if len(name) > 15:
        msgs.append("must be no more than 15 characters")
    if not _PORT_NAME.match(name):
        msgs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    elif "--" in name:
        msgs.append("must not contain consecutive hyphens")
    if not re.search("[a-z]", name):
        msgs.append("must contain at least one letter (a-z)")
    if name.startswith("-") or name.endswith("-"):
        msgs.append("must not begin or end with a hyphen")
    return [v.invalid_value(path, name, m) for m in msgs]


def _resources(res: object, path: str) -> list[Cause]:
    if not isinstance(res, dict):
        return []
    causes: list[Cause] = []
    limits = res.get("limits") or {}
    for r, q in (res.get("requests") or {}).items():
        rq = parse_quantity(q)
        if rq is None:
            causes.append(v.invalid_value(f"{path}.requests[{r}]", str(q),
                                          "must match the regular expression "
                                          "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"))
            continue
        if r in limits and (lq := parse_quantity(limits[r])) is not None:
            if rq > lq:
                causes.append(v.invalid_value(
                    f"{path}.requests", str(q),
                    f"must be less than or equal to {r} limit of {limits[r]}"))
    return causes


def _containers(containers: object, path: str, volumes: set[str], required: bool,
                seen: set[str]) -> list[Cause]:
    if not containers:
        return [v.required(path)] if required else []
    if not isinstance(containers, list):
        return [v.invalid_value(path, containers, "must be a list")]
    causes: list[Cause] = []
    for i, c in enumerate(containers):
        p = f"{path}[{i}]"
        if not isinstance(c, dict):
            causes.append(v.invalid_value(p, c, "must be an object"))
            continue
        name = c.get("name") or ""
        if not name:
            causes.append(v.required(f"{p}.name"))
        else:
            causes += [v.invalid_value(f"{p}.name", name, m) for m in v.dns1123_label(name)]
            if name in seen:
                causes.append(v.duplicate(f"{p}.name", name))
            seen.add(name)
        if not c.get("image"):
            causes.append(v.required(f"{p}.image"))
        pull = c.get("imagePullPolicy")
        if pull and pull not in ("Always", "IfNotPresent", "Never"):
            causes.append(v.not_supported(f"{p}.imagePullPolicy", pull,
                                          ["Always", "IfNotPresent", "Never"]))
        port_names: set[str] = set()
        for j, port in enumerate(c.get("ports") or []):
            pp = f"{p}.ports[{j}]"
            port = port if isinstance(port, dict) else {}
            if port.get("name"):
                causes += _port_name(port["name"], f"{pp}.name")
                if port["name"] in port_names:
                    causes.append(v.duplicate(f"{pp}.name", port["name"]))
                port_names.add(port["name"])
            if "containerPort" not in port:
                causes.append(v.required(f"{pp}.containerPort"))
            else:
                causes += _port(port.get("containerPort"), f"{pp}.containerPort")
            causes += _port(port.get("hostPort"), f"{pp}.hostPort", allow_zero=True)
            proto = port.get("protocol")
            if proto and proto not in ("TCP", "UDP", "SCTP"):
                causes.append(v.not_supported(f"{pp}.protocol", proto, ["SCTP", "TCP", "UDP"]))
        for j, e in enumerate(c.get("env") or []):
            en = e.get("name") if isinstance(e, dict) else None
            if not en:
                causes.append(v.required(f"{p}.env[{j}].name"))
            elif not _ENV_NAME.match(en):
                causes.append(v.invalid_value(
                    f"{p}.env[{j}].name", en,
                    "a valid environment variable name must consist of alphabetic characters, "
                    "digits, '_', '-', or '.', and must not start with a digit (e.g. "
                    "'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for "
                    "validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')"))
        for j, m in enumerate(c.get("volumeMounts") or []):
            m = m if isinstance(m, dict) else {}
            mp = f"{p}.volumeMounts[{j}]"
            if not m.get("name"):
                causes.append(v.required(f"{mp}.name"))
            elif m["name"] not in volumes:
                causes.append(field_cause(f"{mp}.name", f'Not found: "{m["name"]}"',
                                          "FieldValueNotFound"))
            if not m.get("mountPath"):
                causes.append(v.required(f"{mp}.mountPath"))
        causes += _resources(c.get("resources"), f"{p}.resources")
    return causes


def validate_pod_spec(spec: object, path: str = "spec") -> list[Cause]:
    if not isinstance(spec, dict):
        return [v.required(path)]
    causes: list[Cause] = []
    volumes: set[str] = set()
    for i, vol in enumerate(spec.get("volumes") or []):
        n = vol.get("name") if isinstance(vol, dict) else None
        if not n:
            causes.append(v.required(f"{path}.volumes[{i}].name"))
            continue
        causes += [v.invalid_value(f"{path}.volumes[{i}].name", n, m) for m in v.dns1123_label(n)]
        if n in volumes:
            causes.append(v.duplicate(f"{path}.volumes[{i}].name", n))
        volumes.add(n)
    seen: set[str] = set()
    causes += _containers(spec.get("containers"), f"{path}.containers", volumes, True, seen)
    causes += _containers(spec.get("initContainers"), f"{path}.initContainers", volumes, False,
                          seen)
    rp = spec.get("restartPolicy")
    if rp and rp not in ("Always", "OnFailure", "Never"):
        causes.append(v.not_supported(f"{path}.restartPolicy", rp,
                                      ["Always", "OnFailure", "Never"]))
    dp = spec.get("dnsPolicy")
    if dp and dp not in ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"):
        causes.append(v.not_supported(f"{path}.dnsPolicy", dp,
                                      ["ClusterFirst", "ClusterFirstWithHostNet", "Default",
                                       "None"]))
    for f in ("activeDeadlineSeconds",):
        val = spec.get(f)
        if val is not None and (not isinstance(val, int) or val <= 0):
            causes.append(v.invalid_value(f"{path}.{f}", val,
                                          "must be between 1 and 2147483647, inclusive"))
    tgps = spec.get("terminationGracePeriodSeconds")
    if tgps is not None and (not isinstance(tgps, int) or tgps < 0):
        causes.append(v.invalid_value(f"{path}.terminationGracePeriodSeconds", tgps,
                                      "must be greater than or equal to 0"))
    if spec.get("nodeSelector") is not None:
        causes += v.check_labels(spec.get("nodeSelector"), f"{path}.nodeSelector")
    for i, t in enumerate(spec.get("tolerations") or []):
        t = t if isinstance(t, dict) else {}
        op = t.get("operator") or "Equal"
        if op not in ("Equal", "Exists"):
            causes.append(v.not_supported(f"{path}.tolerations[{i}].operator", op,
                                          ["Equal", "Exists"]))
        elif op == "Exists" and t.get("value"):
            causes.append(v.invalid_value(f"{path}.tolerations[{i}].operator", t.get("value"),
                                          "value must be empty when `operator` is 'Exists'"))
        eff = t.get("effect")
        if eff and eff not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            causes.append(v.not_supported(f"{path}.tolerations[{i}].effect", eff,
                                          ["NoExecute", "NoSchedule", "PreferNoSchedule"]))
    return causes


def validate_template(tmpl: object, path: str) -> list[Cause]:
    """ValidatePodTemplateSpec: labels, annotations and the pod spec of a template."""
    if not isinstance(tmpl, dict):
        return [v.required(path)]
    md = tmpl.get("metadata") or {}
    causes = v.check_labels(md.get("labels"), f"{path}.metadata.labels")
    causes += v.check_annotations(md.get("annotations"), f"{path}.metadata.annotations")
    causes += validate_pod_spec(tmpl.get("spec"), f"{path}.spec")
    return causes
