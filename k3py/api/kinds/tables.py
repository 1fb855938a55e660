"""Server-side printing (meta.k8s.io/v1 Table) with the columns kubectl users know, as
upstream's printers compute them (pods' STATUS and RESTARTS, deployments' READY, ...)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from typing import Any

from k3py.api.objects import parse_time
from k3py.api.resources import Resource

__all__ = ["build_table", "human_duration", "COLUMNS"]

Col = tuple[str, str, int, str]  # (name, type, priority, description)


def human_duration(d: _dt.timedelta) -> str:
    """kubectl's HumanDuration: 5s, 3m2s, 4h, 2d3h, 90d, 2y."""
    s = int(d.total_seconds())
    if s < -1:
        return "<invalid>"
    s = max(s, 0)
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    days = h // 24
    if h < 24 * 8:
        return f"{days}d{h % 24}h" if h % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    years = days // 365
    if days < 365 * 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def _age(obj: dict, now: _dt.datetime) -> str:
    t = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return human_duration(now - t) if t else "<unknown>"


def _since(value: str | None, now: _dt.datetime) -> str:
    t = parse_time(value)
    return human_duration(now - t) if t else "<unknown>"


def _pod_status(pod: dict) -> tuple[str, int, str, int, int]:
    """(STATUS, restarts, last restart ago, ready, total) like kubectl's printPod."""
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    reason = status.get("reason") or status.get("phase") or "Pending"
    restarts = 0
    last_restart = None
    init_statuses = status.get("initContainerStatuses") or []
    initializing = False
    for i, cs in enumerate(init_statuses):
        restarts += cs.get("restartCount", 0)
        state = cs.get("state") or {}
        term = state.get("terminated")
        if term and term.get("exitCode", 0) == 0:
            continue
        if term:
            reason = "Init:" + (term.get("reason") or f"ExitCode:{term.get('exitCode')}")
        elif (state.get("waiting") or {}).get("reason") not in (None, "PodInitializing"):
            reason = "Init:" + state["waiting"]["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        initializing = True
        break
    ready = 0
    statuses = status.get("containerStatuses") or []
    if not initializing:
        has_running = False
        for cs in reversed(statuses):
            restarts += cs.get("restartCount", 0)
            lt = (cs.get("lastState") or {}).get("terminated") or {}
            if lt.get("finishedAt"):
                if last_restart is None or lt["finishedAt"] > last_restart:
                    last_restart = lt["finishedAt"]
            state = cs.get("state") or {}
            if (state.get("waiting") or {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif (state.get("terminated") or {}).get("reason"):
                reason = state["terminated"]["reason"]
            elif state.get("terminated"):
                t = state["terminated"]
                reason = f"Signal:{t['signal']}" if t.get("signal") else \
                    f"ExitCode:{t.get('exitCode')}"
            elif state.get("running") and cs.get("ready"):
                has_running = True
                ready += 1
            elif state.get("running"):
                has_running = True
        if reason == "Completed" and has_running:
            reason = "Running"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    total = len(spec.get("containers") or [])
    return reason, restarts, last_restart or "", ready, total


def _pod_row(pod: dict, now: _dt.datetime) -> list:
    reason, restarts, last, ready, total = _pod_status(pod)
    r = str(restarts)
    if restarts and last:
        r = f"{restarts} ({_since(last, now)} ago)"
    status = pod.get("status") or {}
    gates = (pod.get("spec") or {}).get("readinessGates") or []
    gate_str = "<none>"
    if gates:
        conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        ok = sum(1 for g in gates if conds.get(g.get("conditionType")) == "True")
        gate_str = f"{ok}/{len(gates)}"
    return [pod["metadata"]["name"], f"{ready}/{total}", reason, r, _age(pod, now),
            status.get("podIP") or "<none>", (pod.get("spec") or {}).get("nodeName") or "<none>",
            status.get("nominatedNodeName") or "<none>", gate_str]


def _containers_images(spec: dict) -> tuple[str, str]:
    cs = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return (",".join(c.get("name", "") for c in cs), ",".join(c.get("image", "") for c in cs))


def _selector_str(sel: Any) -> str:
    if not sel:
        return "<none>"
    from k3py.api.selectors import selector_to_string
    if isinstance(sel, dict) and ("matchLabels" in sel or "matchExpressions" in sel):
        return selector_to_string(sel) or "<none>"
    if isinstance(sel, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(sel.items()))
    return str(sel)


def _deploy_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    c, i = _containers_images(spec)
    return [o["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0), _age(o, now), c, i,
            _selector_str(spec.get("selector"))]


def _rs_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    c, i = _containers_images(spec)
    return [o["metadata"]["name"], spec.get("replicas", 0), st.get("replicas", 0),
            st.get("readyReplicas", 0), _age(o, now), c, i, _selector_str(spec.get("selector"))]


def _ds_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    c, i = _containers_images(spec)
    ns = ((spec.get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    return [o["metadata"]["name"], st.get("desiredNumberScheduled", 0),
            st.get("currentNumberScheduled", 0), st.get("numberReady", 0),
            st.get("updatedNumberScheduled", 0), st.get("numberAvailable", 0),
            _selector_str(ns), _age(o, now), c, i, _selector_str(spec.get("selector"))]


def _sts_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    c, i = _containers_images(spec)
    return [o["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            _age(o, now), c, i]


def _job_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    completions = spec.get("completions")
    comp = f"{st.get('succeeded', 0)}/{completions}" if completions is not None else \
        f"{st.get('succeeded', 0)}/1 of {spec.get('parallelism', 1)}"
    status = "Running"
    for cond in st.get("conditions") or []:
        if cond.get("status") == "True":
            if cond.get("type") == "Complete":
                status = "Complete"
            elif cond.get("type") == "Failed":
                status = "Failed"
            elif cond.get("type") == "Suspended":
                status = "Suspended"
            elif cond.get("type") == "FailureTarget":
                status = "FailureTarget"
            elif cond.get("type") == "SuccessCriteriaMet" and status == "Running":
                status = "SuccessCriteriaMet"
    start, end = parse_time(st.get("startTime")), parse_time(st.get("completionTime"))
    duration = human_duration((end or now) - start) if start else ""
    c, i = _containers_images(spec)
    return [o["metadata"]["name"], status, comp, duration, _age(o, now), c, i,
            _selector_str(spec.get("selector"))]


def _cronjob_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    last = _since(st.get("lastScheduleTime"), now) if st.get("lastScheduleTime") else "<none>"
    jspec = (spec.get("jobTemplate") or {}).get("spec") or {}
    c, i = _containers_images(jspec)
    return [o["metadata"]["name"], spec.get("schedule", ""), spec.get("timeZone") or "<none>",
            bool(spec.get("suspend")), len(st.get("active") or []), last, _age(o, now), c, i,
            _selector_str(jspec.get("selector"))]


def _svc_ports(spec: dict) -> str:
    out = []
    for p in spec.get("ports") or []:
        s = f"{p.get('port')}"
        if p.get("nodePort"):
            s += f":{p['nodePort']}"
        out.append(f"{s}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _svc_row(o: dict, now: _dt.datetime) -> list:
    spec = o.get("spec") or {}
    st = spec.get("type", "ClusterIP")
    ext = "<none>"
    ingress = ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ips = [i.get("ip") or i.get("hostname") for i in ingress] + list(spec.get("externalIPs") or [])
    if st == "ExternalName":
        ext = spec.get("externalName", "<none>")
    elif ips:
        ext = ",".join(x for x in ips if x)
    elif st == "LoadBalancer":
        ext = "<pending>"
    return [o["metadata"]["name"], st, spec.get("clusterIP") or "<none>", ext, _svc_ports(spec),
            _age(o, now), _selector_str(spec.get("selector"))]


def _ep_row(o: dict, now: _dt.datetime) -> list:
    eps = []
    for sub in o.get("subsets") or []:
        for a in sub.get("addresses") or []:
            for p in sub.get("ports") or [{}]:
                eps.append(f"{a.get('ip')}:{p.get('port')}" if p.get("port") else a.get("ip"))
    text = ",".join(eps[:3]) + (f" + {len(eps) - 3} more..." if len(eps) > 3 else "")
    return [o["metadata"]["name"], text or "<none>", _age(o, now)]


def _node_row(o: dict, now: _dt.datetime) -> list:
    st = o.get("status") or {}
    ready = "Unknown"
    for c in st.get("conditions") or []:
        if c.get("type") == "Ready":
            ready = {"True": "Ready", "False": "NotReady"}.get(c.get("status"), "Unknown")
    status = [ready]
    if (o.get("spec") or {}).get("unschedulable"):
        status.append("SchedulingDisabled")
    labels = (o.get("metadata") or {}).get("labels") or {}
    roles = sorted({k.split("/", 1)[1] for k in labels
                    if k.startswith("node-role.kubernetes.io/") and "/" in k} |
                   ({labels["kubernetes.io/role"]} if "kubernetes.io/role" in labels else set()))
    info = st.get("nodeInfo") or {}
    addrs = {a.get("type"): a.get("address") for a in st.get("addresses") or []}
    return [o["metadata"]["name"], ",".join(status), ",".join(roles) or "<none>", _age(o, now),
            info.get("kubeletVersion", ""), addrs.get("InternalIP", "<none>"),
            addrs.get("ExternalIP", "<none>"), info.get("osImage", "<unknown>"),
            info.get("kernelVersion", "<unknown>"), info.get("containerRuntimeVersion",
                                                             "<unknown>")]


def _event_row(o: dict, now: _dt.datetime) -> list:
    last = o.get("lastTimestamp") or o.get("eventTime") or \
        (o.get("metadata") or {}).get("creationTimestamp")
    inv = o.get("involvedObject") or o.get("regarding") or {}
    kind = (inv.get("kind") or "").lower()
    return [_since(last, now), o.get("type", ""), o.get("reason", ""),
            f"{kind}/{inv.get('name', '')}", o.get("message") or o.get("note") or ""]


def _pvc_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    cap = (st.get("capacity") or {}).get("storage", "")
    return [o["metadata"]["name"], st.get("phase", ""), spec.get("volumeName", ""), cap,
            ",".join(_access(spec.get("accessModes"))), spec.get("storageClassName") or "<unset>",
            "<unset>", _age(o, now), spec.get("volumeMode", "Filesystem")]


def _access(modes: Any) -> list[str]:
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
             "ReadWriteOncePod": "RWOP"}
    return [short.get(m, m) for m in modes or []]


def _pv_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    ref = spec.get("claimRef") or {}
    claim = f"{ref.get('namespace')}/{ref.get('name')}" if ref else ""
    return [o["metadata"]["name"], (spec.get("capacity") or {}).get("storage", ""),
            ",".join(_access(spec.get("accessModes"))),
            spec.get("persistentVolumeReclaimPolicy", ""), st.get("phase", ""), claim,
            spec.get("storageClassName", ""), "<unset>", st.get("reason", ""), _age(o, now),
            spec.get("volumeMode", "Filesystem")]


def _ingress_row(o: dict, now: _dt.datetime) -> list:
    spec = o.get("spec") or {}
    hosts = [r.get("host") for r in spec.get("rules") or [] if r.get("host")]
    lb = ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ports = "80, 443" if spec.get("tls") else "80"
    return [o["metadata"]["name"], spec.get("ingressClassName") or "<none>",
            ",".join(hosts) or "*", ",".join(i.get("ip") or i.get("hostname") or "" for i in lb),
            ports, _age(o, now)]


def _secret_row(o: dict, now: _dt.datetime) -> list:
    return [o["metadata"]["name"], o.get("type", ""), len(o.get("data") or {}), _age(o, now)]


def _cm_row(o: dict, now: _dt.datetime) -> list:
    return [o["metadata"]["name"], len(o.get("data") or {}) + len(o.get("binaryData") or {}),
            _age(o, now)]


def _ns_row(o: dict, now: _dt.datetime) -> list:
    return [o["metadata"]["name"], (o.get("status") or {}).get("phase", ""), _age(o, now)]


def _sc_row(o: dict, now: _dt.datetime) -> list:
    ann = (o.get("metadata") or {}).get("annotations") or {}
    name = o["metadata"]["name"]
    if ann.get("storageclass.kubernetes.io/is-default-class") == "true":
        name += " (default)"
    return [name, o.get("provisioner", ""), o.get("reclaimPolicy", "Delete"),
            o.get("volumeBindingMode", "Immediate"), bool(o.get("allowVolumeExpansion")),
            _age(o, now)]


def _lease_row(o: dict, now: _dt.datetime) -> list:
    return [o["metadata"]["name"], (o.get("spec") or {}).get("holderIdentity", ""),
            _age(o, now)]


def _crd_row(o: dict, now: _dt.datetime) -> list:
    return [o["metadata"]["name"], (o.get("metadata") or {}).get("creationTimestamp", "")]


def _sa_row(o: dict, now: _dt.datetime) -> list:
    return [o["metadata"]["name"], len(o.get("secrets") or []), _age(o, now)]


def _eps_row(o: dict, now: _dt.datetime) -> list:
    ports = ",".join(str(p.get("port")) for p in o.get("ports") or []) or "<unset>"
    addrs = [a for e in o.get("endpoints") or [] for a in e.get("addresses") or []]
    text = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [o["metadata"]["name"], o.get("addressType", ""), ports, text or "<unset>",
            _age(o, now)]


def _name_age(o: dict, now: _dt.datetime) -> list:
    return [o["metadata"]["name"], _age(o, now)]


S, I, D = "string", "integer", "date"  # noqa: E741
_NAME: Col = ("Name", S, 0, "Name must be unique within a namespace.")
_AGE: Col = ("Age", S, 0, "CreationTimestamp is a timestamp representing the server time when "
             "this object was created.")

COLUMNS: dict[tuple[str, str], tuple[list[Col], Callable[[dict, _dt.datetime], list]]] = {
    ("", "Pod"): ([_NAME, ("Ready", S, 0, "The aggregate readiness state of this pod for "
                           "accepting traffic."), ("Status", S, 0, "The aggregate status of "
                           "the containers in this pod."), ("Restarts", S, 0, "The number of "
                           "times the containers in this pod have been restarted and when the "
                           "last container in this pod has restarted."), _AGE,
                   ("IP", S, 1, "IP address allocated to the pod."),
                   ("Node", S, 1, "Name of the Node this pod is assigned to."),
                   ("Nominated Node", S, 1, "Name of the node nominated by the scheduler."),
                   ("Readiness Gates", S, 1, "Pod readiness gates.")], _pod_row),
    ("apps", "Deployment"): ([_NAME, ("Ready", S, 0, ""), ("Up-to-date", I, 0, ""),
                              ("Available", I, 0, ""), _AGE, ("Containers", S, 1, ""),
                              ("Images", S, 1, ""), ("Selector", S, 1, "")], _deploy_row),
    ("apps", "ReplicaSet"): ([_NAME, ("Desired", I, 0, ""), ("Current", I, 0, ""),
                              ("Ready", I, 0, ""), _AGE, ("Containers", S, 1, ""),
                              ("Images", S, 1, ""), ("Selector", S, 1, "")], _rs_row),
    ("", "ReplicationController"): ([_NAME, ("Desired", I, 0, ""), ("Current", I, 0, ""),
                                     ("Ready", I, 0, ""), _AGE, ("Containers", S, 1, ""),
                                     ("Images", S, 1, ""), ("Selector", S, 1, "")], _rs_row),
    ("apps", "DaemonSet"): ([_NAME, ("Desired", I, 0, ""), ("Current", I, 0, ""),
                             ("Ready", I, 0, ""), ("Up-to-date", I, 0, ""),
                             ("Available", I, 0, ""), ("Node Selector", S, 0, ""), _AGE,
                             ("Containers", S, 1, ""), ("Images", S, 1, ""),
                             ("Selector", S, 1, "")], _ds_row),
    ("apps", "StatefulSet"): ([_NAME, ("Ready", S, 0, ""), _AGE, ("Containers", S, 1, ""),
                               ("Images", S, 1, "")], _sts_row),
    ("batch", "Job"): ([_NAME, ("Status", S, 0, ""), ("Completions", S, 0, ""),
                        ("Duration", S, 0, ""), _AGE, ("Containers", S, 1, ""),
                        ("Images", S, 1, ""), ("Selector", S, 1, "")], _job_row),
    ("batch", "CronJob"): ([_NAME, ("Schedule", S, 0, ""), ("Timezone", S, 0, ""),
                            ("Suspend", "boolean", 0, ""), ("Active", I, 0, ""),
                            ("Last Schedule", S, 0, ""), _AGE, ("Containers", S, 1, ""),
                            ("Images", S, 1, ""), ("Selector", S, 1, "")], _cronjob_row),
    ("", "Service"): ([_NAME, ("Type", S, 0, ""), ("Cluster-IP", S, 0, ""),
                       ("External-IP", S, 0, ""), ("Port(s)", S, 0, ""), _AGE,
                       ("Selector", S, 1, "")], _svc_row),
    ("", "Endpoints"): ([_NAME, ("Endpoints", S, 0, ""), _AGE], _ep_row),
    ("", "Node"): ([_NAME, ("Status", S, 0, ""), ("Roles", S, 0, ""), _AGE,
                    ("Version", S, 0, ""), ("Internal-IP", S, 1, ""), ("External-IP", S, 1, ""),
                    ("OS-Image", S, 1, ""), ("Kernel-Version", S, 1, ""),
                    ("Container-Runtime", S, 1, "")], _node_row),
    ("", "Event"): ([("Last Seen", S, 0, ""), ("Type", S, 0, ""), ("Reason", S, 0, ""),
                     ("Object", S, 0, ""), ("Message", S, 0, "")], _event_row),
    ("", "PersistentVolumeClaim"): ([_NAME, ("Status", S, 0, ""), ("Volume", S, 0, ""),
                                     ("Capacity", S, 0, ""), ("Access Modes", S, 0, ""),
                                     ("StorageClass", S, 0, ""),
                                     ("VolumeAttributesClass", S, 0, ""), _AGE,
                                     ("VolumeMode", S, 1, "")], _pvc_row),
    ("", "PersistentVolume"): ([_NAME, ("Capacity", S, 0, ""), ("Access Modes", S, 0, ""),
                                ("Reclaim Policy", S, 0, ""), ("Status", S, 0, ""),
                                ("Claim", S, 0, ""), ("StorageClass", S, 0, ""),
                                ("VolumeAttributesClass", S, 0, ""), ("Reason", S, 0, ""),
                                _AGE, ("VolumeMode", S, 1, "")], _pv_row),
    ("networking.k8s.io", "Ingress"): ([_NAME, ("Class", S, 0, ""), ("Hosts", S, 0, ""),
                                        ("Address", S, 0, ""), ("Ports", S, 0, ""), _AGE],
                                       _ingress_row),
    ("", "Secret"): ([_NAME, ("Type", S, 0, ""), ("Data", I, 0, ""), _AGE], _secret_row),
    ("", "ConfigMap"): ([_NAME, ("Data", I, 0, ""), _AGE], _cm_row),
    ("", "Namespace"): ([_NAME, ("Status", S, 0, ""), _AGE], _ns_row),
    ("", "ServiceAccount"): ([_NAME, ("Secrets", I, 0, ""), _AGE], _sa_row),
    ("storage.k8s.io", "StorageClass"): ([_NAME, ("Provisioner", S, 0, ""),
                                          ("ReclaimPolicy", S, 0, ""),
                                          ("VolumeBindingMode", S, 0, ""),
                                          ("AllowVolumeExpansion", "boolean", 0, ""), _AGE],
                                         _sc_row),
    ("coordination.k8s.io", "Lease"): ([_NAME, ("Holder", S, 0, ""), _AGE], _lease_row),
    ("discovery.k8s.io", "EndpointSlice"): ([_NAME, ("AddressType", S, 0, ""),
                                             ("Ports", S, 0, ""), ("Endpoints", S, 0, ""), _AGE],
                                            _eps_row),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): ([_NAME, ("Created At", D, 0, "")],
                                                           _crd_row),
}
COLUMNS[("events.k8s.io", "Event")] = COLUMNS[("", "Event")]


def _crd_columns(res: Resource) -> tuple[list[Col], Callable[[dict, _dt.datetime], list]] | None:
    cols = res.extra.get("printer_columns")
    if not cols:
        return None
    from k3py.api.jsonpath import get_path
    defs: list[Col] = [_NAME]
    for c in cols:
        defs.append((c.get("name", ""), c.get("type", "string"), int(c.get("priority", 0)),
                     c.get("description", "")))
    has_age = any(c.get("name") == "Age" for c in cols)
    if not has_age:
        defs.append(_AGE)

    def row(o: dict, now: _dt.datetime) -> list:
        out: list = [o["metadata"]["name"]]
        for c in cols:
            try:
                val = get_path(o, c.get("jsonPath", ""))
            except ValueError:
                val = None
            if c.get("type") == "date" and isinstance(val, str):
                val = _since(val, now)
            if val is None:
                val = "<none>" if c.get("type") in ("string", None) else None
            elif isinstance(val, (dict, list)):
                import orjson
                val = orjson.dumps(val).decode()
            out.append(val)
        if not has_age:
            out.append(_age(o, now))
        return out
    return defs, row


def build_table(res: Resource, objs: list[dict], now: _dt.datetime | None = None,
                include_object: str = "Metadata") -> dict:
    now = now or _dt.datetime.now(_dt.UTC)
    spec = COLUMNS.get((res.group, res.kind)) or (res.crd and _crd_columns(res)) or \
        ([_NAME, _AGE], _name_age)
    cols, row_fn = spec
    column_defs = [{"name": n, "type": t, "format": "name" if n == "Name" else "",
                    "description": d, "priority": p} for n, t, p, d in cols]
    rows = []
    for o in objs:
        r: dict[str, Any] = {"cells": row_fn(o, now)}
        if include_object == "Object":
            r["object"] = o
        elif include_object != "None":
            r["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": o.get("metadata") or {}}
        rows.append(r)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {},
            "columnDefinitions": column_defs, "rows": rows}
