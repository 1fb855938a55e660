"""Table printers for core (v1) kinds, as upstream's pkg/printers/internalversion computes
them: pods' STATUS and RESTARTS, services' EXTERNAL-IP and PORT(S), nodes' ROLES, events..."""

from __future__ import annotations

import datetime as _dt

from k3py.api.duration import since
from k3py.api.kinds.printers import age, containers_images, format_labels, name
from k3py.api.kinds.registry import AGE_COL, NAME_COL, col, register

__all__ = ["pod_status"]

S, I = "string", "integer"  # noqa: E741


def _terminated_reason(t: dict, prefix: str = "") -> str:
    if t.get("reason"):
        return prefix + t["reason"]
    if t.get("signal"):
        return f"{prefix}Signal:{t['signal']}"
    return f"{prefix}ExitCode:{t.get('exitCode', 0)}"


def pod_status(pod: dict) -> tuple[str, int, str, int, int]:
    """printPod's (STATUS, restarts, last restart time, ready, total)."""
    status, spec = pod.get("status") or {}, pod.get("spec") or {}
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    for c in status.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    init_specs = {c.get("name"): c for c in spec.get("initContainers") or []}
    sidecars = {n for n, c in init_specs.items() if c.get("restartPolicy") == "Always"}
    total = len(spec.get("containers") or []) + len(sidecars)
    ready = restarts = side_restarts = 0
    last, side_last = "", ""
    initializing = False
    init_statuses = status.get("initContainerStatuses") or []
    for i, cs in enumerate(init_statuses):
        restarts += cs.get("restartCount", 0)
        lt = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt") or ""
        last = max(last, lt)
        is_sidecar = cs.get("name") in sidecars
        if is_sidecar:
            side_restarts += cs.get("restartCount", 0)
            side_last = max(side_last, lt)
        state = cs.get("state") or {}
        term = state.get("terminated")
        waiting = state.get("waiting") or {}
        if term and term.get("exitCode", 0) == 0:
            continue
        if is_sidecar and cs.get("started"):
            if cs.get("ready"):
                ready += 1
            continue
        if term:
            reason = _terminated_reason(term, "Init:")
        elif waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(spec.get('initContainers') or [])}"
        initializing = True
        break
    initialized = any(c.get("type") == "Initialized" and c.get("status") == "True"
                      for c in status.get("conditions") or [])
    if not initializing or initialized:
        restarts, last = side_restarts, side_last
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += cs.get("restartCount", 0)
            lt = ((cs.get("lastState") or {}).get("terminated") or {}).get("finishedAt") or ""
            last = max(last, lt)
            state = cs.get("state") or {}
            waiting, term = state.get("waiting") or {}, state.get("terminated")
            if waiting.get("reason"):
                reason = waiting["reason"]
            elif term:
                reason = _terminated_reason(term)
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            pod_ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                            for c in status.get("conditions") or [])
            reason = "Running" if pod_ready else "NotReady"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif phase not in ("Succeeded", "Failed"):
            reason = "Terminating"
    return reason, restarts, last, ready, total


def _pod_row(pod: dict, now: _dt.datetime) -> list:
    reason, restarts, last, ready, total = pod_status(pod)
    r = str(restarts)
    if restarts and last:
        r = f"{restarts} ({since(last, now)} ago)"
    status, spec = pod.get("status") or {}, pod.get("spec") or {}
    ips = status.get("podIPs") or []
    ip = (ips[0].get("ip") if ips and isinstance(ips[0], dict) else "") or "<none>"
    gates = spec.get("readinessGates") or []
    gate_str = "<none>"
    if gates:
        conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        ok = sum(1 for g in gates if conds.get(g.get("conditionType")) == "True")
        gate_str = f"{ok}/{len(gates)}"
    return [name(pod), f"{ready}/{total}", reason, r, age(pod, now), ip,
            spec.get("nodeName") or "<none>", status.get("nominatedNodeName") or "<none>",
            gate_str]


def _lb_ips(status: dict) -> list[str]:
    ing = ((status or {}).get("loadBalancer") or {}).get("ingress") or []
    return sorted({i.get("ip") or i.get("hostname") for i in ing
                   if i.get("ip") or i.get("hostname")})


def _svc_external_ip(o: dict) -> str:
    spec = o.get("spec") or {}
    st = spec.get("type") or "ClusterIP"
    ext = list(spec.get("externalIPs") or [])
    if st in ("ClusterIP", "NodePort"):
        return ",".join(ext) if ext else "<none>"
    if st == "LoadBalancer":
        lb = _lb_ips(o.get("status") or {})
        if ext:
            return ",".join(lb + ext)
        return ",".join(lb) if lb else "<pending>"
    if st == "ExternalName":
        return spec.get("externalName", "")
    return "<unknown>"


def _svc_row(o: dict, now: _dt.datetime) -> list:
    spec = o.get("spec") or {}
    ports = []
    for p in spec.get("ports") or []:
        s = f"{p.get('port')}:{p['nodePort']}" if p.get("nodePort") else f"{p.get('port')}"
        ports.append(f"{s}/{p.get('protocol') or 'TCP'}")
    cluster_ip = ",".join(spec.get("clusterIPs") or []) or spec.get("clusterIP") or "<none>"
    return [name(o), spec.get("type") or "", cluster_ip,
            _svc_external_ip(o), ",".join(ports) or "<none>", age(o, now),
            format_labels(spec.get("selector"))]


def _more(items: list[str], count: int, empty: str) -> str:
    text = ",".join(items[:3])
    if count > 3:
        return f"{text} + {count - 3} more..."
    return text or empty


def _ep_row(o: dict, now: _dt.datetime) -> list:
    subsets = o.get("subsets") or []
    if not subsets:
        return [name(o), "<none>", age(o, now)]
    eps: list[str] = []
    for ss in subsets:
        addrs = [a.get("ip", "") for a in ss.get("addresses") or []]
        if not ss.get("ports"):
            eps += addrs
        for p in ss.get("ports") or []:
            for ip in addrs:
                eps.append(f"[{ip}]:{p.get('port')}" if ":" in ip else f"{ip}:{p.get('port')}")
    return [name(o), _more(eps, len(eps), ""), age(o, now)]


def _node_row(o: dict, now: _dt.datetime) -> list:
    st, spec = o.get("status") or {}, o.get("spec") or {}
    status = []
    for c in st.get("conditions") or []:
        if c.get("type") == "Ready":
            status = ["Ready" if c.get("status") == "True" else "NotReady"]
    status = status or ["Unknown"]
    if spec.get("unschedulable"):
        status.append("SchedulingDisabled")
    labels = (o.get("metadata") or {}).get("labels") or {}
    roles = {k[len("node-role.kubernetes.io/"):] for k in labels
             if k.startswith("node-role.kubernetes.io/") and k != "node-role.kubernetes.io/"}
    if labels.get("kubernetes.io/role"):
        roles.add(labels["kubernetes.io/role"])
    info = st.get("nodeInfo") or {}
    addrs: dict[str, str] = {}
    for a in st.get("addresses") or []:
        addrs.setdefault(a.get("type"), a.get("address"))
    return [name(o), ",".join(status), ",".join(sorted(roles)) or "<none>", age(o, now),
            info.get("kubeletVersion", ""), addrs.get("InternalIP") or "<none>",
            addrs.get("ExternalIP") or "<none>", info.get("osImage") or "<unknown>",
            info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


def _event_row(o: dict, now: _dt.datetime) -> list:
    first_ts = o.get("firstTimestamp") or o.get("deprecatedFirstTimestamp")
    first = since(first_ts or o.get("eventTime"), now)
    last_ts = o.get("lastTimestamp") or o.get("deprecatedLastTimestamp")
    last = since(last_ts, now) if last_ts else first
    count = o.get("count") or o.get("deprecatedCount") or 0
    series = o.get("series")
    if isinstance(series, dict):
        last = since(series.get("lastObservedTime"), now)
        count = series.get("count") or 0
    elif not count:
        count = 1
    inv = o.get("involvedObject") or o.get("regarding") or {}
    kind = (inv.get("kind") or "").lower()
    target = f"{kind}/{inv['name']}" if inv.get("name") else kind
    src = o.get("source") or o.get("deprecatedSource") or {}
    component = src.get("component") or o.get("reportingComponent") or \
        o.get("reportingController") or ""
    host = src.get("host") or o.get("reportingInstance") or ""
    source = f"{component}, {host}" if host else component
    message = (o.get("message") or o.get("note") or "").strip()
    return [last, o.get("type", ""), o.get("reason", ""), target, inv.get("fieldPath", ""),
            source, message, first, count, name(o)]


_ACCESS = (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"),
           ("ReadWriteOncePod", "RWOP"))


def access_modes(modes: object) -> str:
    modes = modes if isinstance(modes, list) else []
    return ",".join(short for long_, short in _ACCESS if long_ in modes)


def _storage_class(o: dict) -> str:
    ann = (o.get("metadata") or {}).get("annotations") or {}
    return ann.get("volume.beta.kubernetes.io/storage-class") or \
        (o.get("spec") or {}).get("storageClassName") or ""


def _pvc_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    phase = "Terminating" if (o.get("metadata") or {}).get("deletionTimestamp") else \
        st.get("phase", "")
    cap = modes = ""
    if spec.get("volumeName"):
        modes = access_modes(st.get("accessModes"))
        cap = (st.get("capacity") or {}).get("storage", "")
    return [name(o), phase, spec.get("volumeName", ""), cap, modes, _storage_class(o),
            spec.get("volumeAttributesClassName") or "<unset>", age(o, now),
            spec.get("volumeMode") or "<unset>"]


def _pv_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    ref = spec.get("claimRef")
    claim = f"{ref.get('namespace', '')}/{ref.get('name', '')}" if isinstance(ref, dict) else ""
    phase = "Terminating" if (o.get("metadata") or {}).get("deletionTimestamp") else \
        st.get("phase", "")
    return [name(o), (spec.get("capacity") or {}).get("storage", "0"),
            access_modes(spec.get("accessModes")), spec.get("persistentVolumeReclaimPolicy", ""),
            phase, claim, _storage_class(o), spec.get("volumeAttributesClassName") or "<unset>",
            st.get("reason", ""), age(o, now), spec.get("volumeMode") or "<unset>"]


def _rc_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    c, i = containers_images((spec.get("template") or {}).get("spec"))
    return [name(o), spec.get("replicas", 0), st.get("replicas", 0), st.get("readyReplicas", 0),
            age(o, now), c, i, format_labels(spec.get("selector"))]


def _podtemplate_row(o: dict, now: _dt.datetime) -> list:
    tmpl = o.get("template") or {}
    c, i = containers_images(tmpl.get("spec"))
    return [name(o), c, i, format_labels((tmpl.get("metadata") or {}).get("labels"))]


_CONTAINERS = col("Containers", S, "Names of each container in the template.", 1)
_IMAGES = col("Images", S, "Images referenced by each container in the template.", 1)

register("", "Pod", row=_pod_row, columns=[
    NAME_COL, col("Ready", S, "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", S, "The aggregate status of the containers in this pod."),
    col("Restarts", S, "The number of times the containers in this pod have been restarted "
                       "and when the last container in this pod has restarted."),
    AGE_COL, col("IP", S, "IP address allocated to the pod. Routable at least within the "
                          "cluster. Empty if not yet allocated.", 1),
    col("Node", S, "NodeName indicates in which node this pod is scheduled.", 1),
    col("Nominated Node", S, "nominatedNodeName is set only when this pod preempts other pods "
                             "on the node.", 1),
    col("Readiness Gates", S, "If specified, all readiness gates will be evaluated for pod "
                              "readiness.", 1)])
register("", "Service", row=_svc_row, columns=[
    NAME_COL, col("Type", S, "type determines how the Service is exposed."),
    col("Cluster-IP", S, "clusterIP is the IP address of the service."),
    col("External-IP", S, "externalIPs is a list of IP addresses for which nodes in the "
                          "cluster will also accept traffic for this service."),
    col("Port(s)", S, "The list of ports that are exposed by this service."), AGE_COL,
    col("Selector", S, "Route service traffic to pods with label keys and values matching this "
                       "selector.", 1)])
register("", "Endpoints", row=_ep_row, columns=[
    NAME_COL, col("Endpoints", S, "The set of all endpoints is the union of all subsets."),
    AGE_COL])
register("", "Node", row=_node_row, columns=[
    NAME_COL, col("Status", S, "The status of the node"), col("Roles", S, "The roles of the node"),
    AGE_COL, col("Version", S, "Kubelet Version reported by the node."),
    col("Internal-IP", S, "List of addresses reachable to the node.", 1),
    col("External-IP", S, "List of addresses reachable to the node.", 1),
    col("OS-Image", S, "OS Image reported by the node from /etc/os-release.", 1),
    col("Kernel-Version", S, "Kernel Version reported by the node.", 1),
    col("Container-Runtime", S, "ContainerRuntime Version reported by the node.", 1)])
_EVENT_COLS = [
    col("Last Seen", S, "The time at which the most recent occurrence of this event was "
                        "recorded."),
    col("Type", S, "Type of this event (Normal, Warning), new types could be added in the "
                   "future."),
    col("Reason", S, "This should be a short, machine understandable string that gives the "
                     "reason for this event being generated."),
    col("Object", S, "The object that this event is about."),
    col("Subobject", S, "The field path of the object this event is about.", 1),
    col("Source", S, "The component reporting this event.", 1),
    col("Message", S, "A human-readable description of the status of this operation."),
    col("First Seen", S, "The time at which the event was first recorded.", 1),
    col("Count", S, "The number of times this event has occurred.", 1),
    dict(NAME_COL, priority=1)]
register("", "Event", row=_event_row, columns=_EVENT_COLS)
register("events.k8s.io", "Event", row=_event_row, columns=_EVENT_COLS)
register("", "Namespace", columns=[NAME_COL, col("Status", S, "The status of the namespace"),
                                   AGE_COL],
         row=lambda o, now: [name(o), (o.get("status") or {}).get("phase", ""), age(o, now)])
register("", "ConfigMap", columns=[NAME_COL, col("Data", S, "Data contains the configuration "
                                                             "data."), AGE_COL],
         row=lambda o, now: [name(o), len(o.get("data") or {}) + len(o.get("binaryData") or {}),
                             age(o, now)])
register("", "Secret", columns=[NAME_COL, col("Type", S, "Used to facilitate programmatic "
                                                        "handling of secret data."),
                                col("Data", S, "Data contains the secret data."), AGE_COL],
         row=lambda o, now: [name(o), o.get("type", ""), len(o.get("data") or {}), age(o, now)])
register("", "ServiceAccount", columns=[NAME_COL, col("Secrets", S, "Secrets is a list of the "
                                                                    "secrets in the same "
                                                                    "namespace."), AGE_COL],
         row=lambda o, now: [name(o), len(o.get("secrets") or []), age(o, now)])
register("", "PersistentVolumeClaim", row=_pvc_row, columns=[
    NAME_COL, col("Status", S, "phase represents the current phase of PersistentVolumeClaim."),
    col("Volume", S, "volumeName is the binding reference to the PersistentVolume backing "
                     "this claim."),
    col("Capacity", S, "capacity represents the actual resources of the underlying volume."),
    col("Access Modes", S, "accessModes contains the actual access modes the volume backing "
                           "the PVC has."),
    col("StorageClass", S, "StorageClass of the pvc"),
    col("VolumeAttributesClass", S, "VolumeAttributesClass of the pvc"), AGE_COL,
    col("VolumeMode", S, "volumeMode defines what type of volume is required by the claim.", 1)])
register("", "PersistentVolume", row=_pv_row, columns=[
    NAME_COL, col("Capacity", S, "capacity is the description of the persistent volume's "
                                 "resources and capacity."),
    col("Access Modes", S, "accessModes contains all ways the volume can be mounted."),
    col("Reclaim Policy", S, "persistentVolumeReclaimPolicy defines what happens to a "
                             "persistent volume when released from its claim."),
    col("Status", S, "phase indicates if a volume is available, bound to a claim, or released "
                     "by a claim."),
    col("Claim", S, "claimRef is part of a bi-directional binding between PersistentVolume and "
                    "PersistentVolumeClaim."),
    col("StorageClass", S, "StorageClass of the pv"),
    col("VolumeAttributesClass", S, "VolumeAttributesClass of the pv"),
    col("Reason", S, "reason is a brief CamelCase string that describes any failure."), AGE_COL,
    col("VolumeMode", S, "volumeMode defines if a volume is intended to be used with a "
                         "formatted filesystem or to remain in raw block state.", 1)])
register("", "ReplicationController", row=_rc_row, columns=[
    NAME_COL, col("Desired", I, "Replicas is the number of desired replicas."),
    col("Current", I, "Replicas is the most recently observed number of replicas."),
    col("Ready", I, "The number of ready replicas for this replication controller."), AGE_COL,
    _CONTAINERS, _IMAGES,
    col("Selector", S, "Selector is a label query over pods that should match the Replicas "
                       "count.", 1)])
register("", "PodTemplate", row=_podtemplate_row, columns=[
    NAME_COL, col("Containers", S, "Names of each container in the template."),
    col("Images", S, "Images referenced by each container in the template."),
    col("Pod Labels", S, "The labels for the pod template.")])
