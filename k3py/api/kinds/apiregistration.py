"""apiregistration.k8s.io/v1 APIService as kube-aggregator defines it: defaults, validation,
the NAME/SERVICE/AVAILABLE/AGE table, the local APIServices kube-apiserver registers for its
own groups (and for CRD groups), and the Available condition. Pure; the APIService controller
(k3py.server.controllers.apiservice) writes what these functions compute."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from k3py.api.errors import Cause
from k3py.api.kinds.printers import age, name
from k3py.api.kinds.registry import AGE_COL, NAME_COL, col, register
from k3py.api.validation import (
    dns1035_label,
    dns1123_subdomain,
    invalid_value,
    path_segment_name,
    required,
)

__all__ = ["GROUP", "LOCAL_PRIORITIES", "CRD_PRIORITY", "AUTOMANAGED_LABEL", "apiservice_name",
           "local_apiservice", "available_condition", "local_condition", "service_of"]

GROUP = "apiregistration.k8s.io"
AUTOMANAGED_LABEL = "kube-aggregator.kubernetes.io/automanaged"

# kube-apiserver's (groupPriorityMinimum, versionPriority) for the group versions k3py serves
# (DefaultGenericAPIServicePriorities and kube-apiserver's own table); a served group version
# missing here gets no APIService, as upstream's makeAPIService skips it
LOCAL_PRIORITIES: dict[tuple[str, str], tuple[int, int]] = {
    ("", "v1"): (18000, 1),
    ("apps", "v1"): (17800, 15),
    ("events.k8s.io", "v1"): (17750, 15),
    ("authentication.k8s.io", "v1"): (17700, 15),
    ("authorization.k8s.io", "v1"): (17600, 15),
    ("autoscaling", "v1"): (17500, 15),
    ("autoscaling", "v2"): (17500, 30),
    ("batch", "v1"): (17400, 15),
    ("certificates.k8s.io", "v1"): (17300, 15),
    ("networking.k8s.io", "v1"): (17200, 15),
    ("policy", "v1"): (17100, 15),
    ("rbac.authorization.k8s.io", "v1"): (17000, 15),
    ("storage.k8s.io", "v1"): (16800, 15),
    ("apiextensions.k8s.io", "v1"): (16700, 15),
    ("admissionregistration.k8s.io", "v1"): (16700, 15),
    ("scheduling.k8s.io", "v1"): (16600, 15),
    ("coordination.k8s.io", "v1"): (16500, 15),
    ("node.k8s.io", "v1"): (16300, 15),
    ("discovery.k8s.io", "v1"): (16200, 15),
    ("flowcontrol.apiserver.k8s.io", "v1"): (16100, 21),
    # metrics-server's own APIService (served in-process by k3py, so Local)
    ("metrics.k8s.io", "v1beta1"): (100, 100),
}
# what upstream's crdregistration controller gives a CRD's group version
CRD_PRIORITY = (1000, 100)


def apiservice_name(group: str, version: str) -> str:
    """`<version>.<group>`; the core group's is "v1."."""
    return f"{version}.{group}"


def local_apiservice(group: str, version: str, crd: bool = False) -> dict | None:
    """The APIService kube-apiserver registers for a group version it serves itself (None
    for a built-in group version without a known priority); labelled automanaged "onstart"
    (built-ins) or "true" (CRD groups, removed with their last CRD)."""
    prio = CRD_PRIORITY if crd else LOCAL_PRIORITIES.get((group, version))
    if prio is None:
        return None
    return {"apiVersion": f"{GROUP}/v1", "kind": "APIService",
            "metadata": {"name": apiservice_name(group, version),
                         "labels": {AUTOMANAGED_LABEL: "true" if crd else "onstart"}},
            "spec": {"group": group, "version": version, "groupPriorityMinimum": prio[0],
                     "versionPriority": prio[1]}}


def service_of(obj: dict) -> dict | None:
    """spec.service, or None for a local APIService."""
    svc = (obj.get("spec") or {}).get("service")
    return svc if isinstance(svc, dict) else None


def local_condition() -> tuple[str, str, str]:
    return "True", "Local", "Local APIServices are always available"


def available_condition(obj: dict, service: dict | None, endpoints: dict | None
                        ) -> tuple[str, str, str]:
    """(status, reason, message) of the Available condition, as kube-aggregator's
    available controller words it. k3py does not proxy to aggregated API servers: a service
    that exists, listens and has endpoints still reports FailedDiscoveryCheck."""
    ref = service_of(obj)
    if ref is None:
        return local_condition()
    ns, svc_name = ref.get("namespace") or "", ref.get("name") or ""
    port = ref.get("port") or 443
    where = f"service/{svc_name} in {_go_quote(ns)}"
    if service is None:
        return "False", "ServiceNotFound", f"{where} is not present"
    spec = service.get("spec") or {}
    if spec.get("type") != "ExternalName":
        ports = [p for p in spec.get("ports") or [] if p.get("port") == port]
        if not ports:
            return "False", "ServicePortError", f"{where} is not listening on port {port}"
        port_name = ports[0].get("name") or ""
        addresses = [a for s in (endpoints or {}).get("subsets") or []
                     if any((p.get("name") or "") == port_name for p in s.get("ports") or [])
                     for a in s.get("addresses") or []]
        if endpoints is None:
            return "False", "EndpointsNotFound", f"cannot find endpoints for {where}"
        if not addresses:
            return "False", "MissingEndpoints", (
                f"endpoints for {where} have no addresses with port name {_go_quote(port_name)}")
    group, version = (obj.get("spec") or {}).get("group"), (obj.get("spec") or {}).get("version")
    return "False", "FailedDiscoveryCheck", (
        f"failing or missing response from https://{svc_name}.{ns}.svc:{port}/apis/{group}/"
        f"{version}: k3py does not proxy to aggregated API servers")


def _go_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _default(obj: dict, old: dict | None) -> None:
    svc = service_of(obj)
    if svc is not None and svc.get("port") is None:
        svc["port"] = 443


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _validate(obj: dict, old: dict | None) -> list[Cause]:
    """ValidateAPIService."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    group, version = spec.get("group") or "", spec.get("version") or ""
    causes: list[Cause] = []
    obj_name = (obj.get("metadata") or {}).get("name") or ""
    wanted = f"{version}.{group}"
    if obj_name and not path_segment_name(obj_name) and obj_name != wanted:
        causes.append(invalid_value("metadata.name", obj_name,
                                    f'must be `spec.version+"."+spec.group`: "{wanted}"'))
    if not group and version != "v1":
        causes.append(required("spec.group", "only v1 may have an empty group and it better "
                                             "be legacy kube"))
    for msg in dns1123_subdomain(group) if group else []:
        causes.append(invalid_value("spec.group", group, msg))
    for msg in dns1035_label(version):
        causes.append(invalid_value("spec.version", version, msg))
    gpm, vp = _int(spec.get("groupPriorityMinimum")), _int(spec.get("versionPriority"))
    if not 0 < gpm <= 20000:
        causes.append(invalid_value("spec.groupPriorityMinimum", gpm,
                                    "must be positive and less than 20000"))
    if not 0 < vp <= 1000:
        causes.append(invalid_value("spec.versionPriority", vp,
                                    "must be positive and less than 1000"))
    svc = service_of(obj)
    if svc is None:
        if spec.get("caBundle"):
            causes.append(invalid_value("spec.caBundle", f"{len(str(spec['caBundle']))} bytes",
                                        "local APIServices may not have a caBundle"))
        if spec.get("insecureSkipTLSVerify"):
            causes.append(invalid_value("spec.insecureSkipTLSVerify", True,
                                        "local APIServices may not have insecureSkipTLSVerify"))
        return causes
    if not svc.get("namespace"):
        causes.append(required("spec.service.namespace"))
    if not svc.get("name"):
        causes.append(required("spec.service.name"))
    port = _int(svc.get("port"))
    if not 0 < port < 65536:
        causes.append(invalid_value("spec.service.port", port, "port is not valid: must be "
                                                               "between 1 and 65535, inclusive"))
    if spec.get("insecureSkipTLSVerify") and spec.get("caBundle"):
        causes.append(invalid_value("spec.insecureSkipTLSVerify", True,
                                    "may not be true if caBundle is present"))
    return causes


def _row(o: dict, now: _dt.datetime) -> list:
    svc = service_of(o)
    service = f"{svc.get('namespace')}/{svc.get('name')}" if svc else "Local"
    available = "Unknown"
    for c in (o.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Available":
            st, reason = c.get("status") or "", c.get("reason") or ""
            available = st if st == "True" or not reason else f"{st} ({reason})"
    return [name(o), service, available, age(o, now)]


register(GROUP, "APIService", default=_default, validate=_validate,
         name_check=path_segment_name, row=_row, columns=[
             NAME_COL,
             col("Service", "string", "The reference to the service that hosts this API "
                                      "endpoint."),
             col("Available", "string", "Whether this service is available."),
             AGE_COL])
