"""Table printers for workloads (apps, batch) and the networking, storage, scheduling, RBAC,
coordination and apiextensions kinds, as upstream's printers compute them."""

from __future__ import annotations

import datetime as _dt

from k3py.api.duration import human_duration, since
from k3py.api.kinds.printers import (
    CRD_COLUMNS,
    age,
    containers_images,
    format_labels,
    format_selector,
    name,
)
from k3py.api.kinds.registry import AGE_COL, NAME_COL, col, register
from k3py.api.objects import parse_time

__all__ = ["job_status"]

S, I, B = "string", "integer", "boolean"  # noqa: E741
_CONTAINERS = col("Containers", S, "Names of each container in the template.", 1)
_IMAGES = col("Images", S, "Images referenced by each container in the template.", 1)


def _sel_col(desc: str) -> dict:
    return col("Selector", S, desc, 1)


def _tmpl_spec(o: dict) -> object:
    return ((o.get("spec") or {}).get("template") or {}).get("spec")


def _deploy_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    c, i = containers_images(_tmpl_spec(o))
    sel = spec.get("selector")
    return [name(o), f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0), age(o, now), c, i,
            format_selector(sel) if sel else ""]


def _rs_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    c, i = containers_images(_tmpl_spec(o))
    return [name(o), spec.get("replicas", 0), st.get("replicas", 0), st.get("readyReplicas", 0),
            age(o, now), c, i, format_selector(spec.get("selector"))]


def _ds_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    tspec = _tmpl_spec(o)
    c, i = containers_images(tspec)
    node_sel = (tspec or {}).get("nodeSelector") if isinstance(tspec, dict) else None
    return [name(o), st.get("desiredNumberScheduled", 0), st.get("currentNumberScheduled", 0),
            st.get("numberReady", 0), st.get("updatedNumberScheduled", 0),
            st.get("numberAvailable", 0), format_labels(node_sel), age(o, now), c, i,
            format_selector(spec.get("selector"))]


def _sts_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    c, i = containers_images(_tmpl_spec(o))
    return [name(o), f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}", age(o, now),
            c, i]


def _revision_row(o: dict, now: _dt.datetime) -> list:
    ctrl = "<none>"
    for ref in (o.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            group = (ref.get("apiVersion") or "").rpartition("/")[0]
            gk = f"{ref.get('kind', '')}.{group}" if group else ref.get("kind", "")
            ctrl = f"{gk.lower()}/{ref.get('name', '')}" if gk else ref.get("name", "")
    return [name(o), ctrl, o.get("revision", 0), age(o, now)]


def _has_cond(st: dict, type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True"
               for c in st.get("conditions") or [])


def job_status(o: dict) -> str:
    st = o.get("status") or {}
    if _has_cond(st, "Complete"):
        return "Complete"
    if _has_cond(st, "Failed"):
        return "Failed"
    if (o.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    for t in ("Suspended", "FailureTarget", "SuccessCriteriaMet"):
        if _has_cond(st, t):
            return t
    return "Running"


def _job_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    succeeded = st.get("succeeded", 0)
    if spec.get("completions") is not None:
        comp = f"{succeeded}/{spec['completions']}"
    elif (spec.get("parallelism") or 0) > 1:
        comp = f"{succeeded}/1 of {spec['parallelism']}"
    else:
        comp = f"{succeeded}/1"
    start, end = parse_time(st.get("startTime")), parse_time(st.get("completionTime"))
    duration = human_duration((end or now) - start) if start else ""
    c, i = containers_images(_tmpl_spec(o))
    return [name(o), job_status(o), comp, duration, age(o, now), c, i,
            format_selector(spec.get("selector"))]


def _bool_ptr(v: object) -> str:
    return "<unknown>" if v is None else ("True" if v else "False")


def _cronjob_row(o: dict, now: _dt.datetime) -> list:
    spec, st = o.get("spec") or {}, o.get("status") or {}
    last = st.get("lastScheduleTime")
    jspec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    c, i = containers_images((jspec.get("template") or {}).get("spec"))
    return [name(o), spec.get("schedule", ""), spec.get("timeZone") or "<none>",
            _bool_ptr(spec.get("suspend")), len(st.get("active") or []),
            since(last, now) if last else "<none>", age(o, now), c, i,
            format_selector(jspec.get("selector"))]


def _ingress_row(o: dict, now: _dt.datetime) -> list:
    spec = o.get("spec") or {}
    rules = spec.get("rules") or []
    hosts = [r.get("host") for r in rules if isinstance(r, dict) and r.get("host")]
    host_str = ",".join(hosts[:3]) + (f" + {len(rules) - 3} more..." if len(hosts) > 3 else "")
    ing = ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    addr = ",".join(sorted({i.get("ip") or i.get("hostname") for i in ing
                            if i.get("ip") or i.get("hostname")}))
    return [name(o), spec.get("ingressClassName") or "<none>", host_str or "*", addr,
            "80, 443" if spec.get("tls") else "80", age(o, now)]


def _ingress_class_row(o: dict, now: _dt.datetime) -> list:
    spec = o.get("spec") or {}
    params = "<none>"
    p = spec.get("parameters")
    if isinstance(p, dict):
        params = p.get("kind", "") + (f".{p['apiGroup']}" if p.get("apiGroup") else "") + \
            f"/{p.get('name', '')}"
    return [name(o), spec.get("controller", ""), params, age(o, now)]


def _eps_row(o: dict, now: _dt.datetime) -> list:
    ports = []
    for p in o.get("ports") or []:
        ports.append(str(p["port"]) if p.get("port") is not None else p.get("name") or "*")
    addrs = [a for e in o.get("endpoints") or [] for a in e.get("addresses") or []]

    def more(items: list[str]) -> str:
        text = ",".join(items[:3])
        return f"{text} + {len(items) - 3} more..." if len(items) > 3 else (text or "<unset>")
    return [name(o), o.get("addressType", ""), more(ports), more(addrs), age(o, now)]


def _sc_row(o: dict, now: _dt.datetime) -> list:
    ann = (o.get("metadata") or {}).get("annotations") or {}
    n = name(o)
    if "true" in (ann.get("storageclass.kubernetes.io/is-default-class"),
                  ann.get("storageclass.beta.kubernetes.io/is-default-class")):
        n += " (default)"
    return [n, o.get("provisioner", ""), o.get("reclaimPolicy") or "Delete",
            o.get("volumeBindingMode") or "Immediate", bool(o.get("allowVolumeExpansion")),
            age(o, now)]


def _binding_row(o: dict, now: _dt.datetime) -> list:
    ref = o.get("roleRef") or {}
    users, groups, sas = [], [], []
    for s in o.get("subjects") or []:
        if s.get("kind") == "User":
            users.append(s.get("name", ""))
        elif s.get("kind") == "Group":
            groups.append(s.get("name", ""))
        elif s.get("kind") == "ServiceAccount":
            sas.append(f"{s.get('namespace', '')}/{s.get('name', '')}")
    return [name(o), f"{ref.get('kind', '')}/{ref.get('name', '')}", age(o, now),
            ", ".join(users), ", ".join(groups), ", ".join(sas)]


def _created_at(o: dict, now: _dt.datetime) -> list:
    return CRD_COLUMNS[1](o, now)


_REPLICAS_DESC = "Number of desired pods."
register("apps", "Deployment", row=_deploy_row, columns=[
    NAME_COL, col("Ready", S, "Number of the pod with ready state"),
    col("Up-to-date", S, "Total number of non-terminating pods targeted by this deployment "
                         "that have the desired template spec."),
    col("Available", S, "Total number of available non-terminating pods (ready for at least "
                        "minReadySeconds) targeted by this deployment."), AGE_COL,
    _CONTAINERS, _IMAGES, _sel_col("Label selector for pods.")])
_RS_COLS = [NAME_COL, col("Desired", I, _REPLICAS_DESC),
            col("Current", I, "Replicas is the most recently observed number of replicas."),
            col("Ready", I, "The number of ready replicas for this replica set."), AGE_COL,
            _CONTAINERS, _IMAGES, _sel_col("Selector is a label query over pods that should "
                                           "match the replica count.")]
register("apps", "ReplicaSet", row=_rs_row, columns=_RS_COLS)
register("apps", "DaemonSet", row=_ds_row, columns=[
    NAME_COL, col("Desired", I, "The total number of nodes that should be running the daemon "
                                "pod."),
    col("Current", I, "The number of nodes that are running at least 1 daemon pod and are "
                      "supposed to run the daemon pod."),
    col("Ready", I, "The number of nodes that should be running the daemon pod and have one or "
                    "more of the daemon pod running with a Ready Condition."),
    col("Up-to-date", I, "The total number of nodes that are running updated daemon pod"),
    col("Available", I, "The number of nodes that should be running the daemon pod and have "
                        "one or more of the daemon pod running and available."),
    col("Node Selector", S, "NodeSelector is a selector which must be true for the pod to fit "
                            "on a node."), AGE_COL, _CONTAINERS, _IMAGES,
    _sel_col("A label query over pods that are managed by the daemon set.")])
register("apps", "StatefulSet", row=_sts_row, columns=[
    NAME_COL, col("Ready", S, "Number of the pod with ready state"), AGE_COL, _CONTAINERS,
    _IMAGES])
register("apps", "ControllerRevision", row=_revision_row, columns=[
    NAME_COL, col("Controller", S, "Controller of the object"),
    col("Revision", I, "Revision indicates the revision of the state represented by Data."),
    AGE_COL])
register("batch", "Job", row=_job_row, columns=[
    NAME_COL, col("Status", S, "Status of the job."),
    col("Completions", S, "The number of pods which reached phase Succeeded."),
    col("Duration", S, "Time required to complete the job."), AGE_COL, _CONTAINERS, _IMAGES,
    _sel_col("A label query over pods that should match the pod count.")])
register("batch", "CronJob", row=_cronjob_row, columns=[
    NAME_COL, col("Schedule", S, "The schedule in Cron format."),
    col("Timezone", S, "The time zone name for the given schedule."),
    col("Suspend", B, "This flag tells the controller to suspend subsequent executions."),
    col("Active", I, "A list of pointers to currently running jobs."),
    col("Last Schedule", S, "Information when was the last time the job was successfully "
                            "scheduled."), AGE_COL, _CONTAINERS, _IMAGES,
    _sel_col("A label query over pods that should match the pod count.")])
register("networking.k8s.io", "Ingress", row=_ingress_row, columns=[
    NAME_COL, col("Class", S, "The name of the IngressClass resource that should be used for "
                              "additional configuration"),
    col("Hosts", S, "Hosts that incoming requests are matched against before the ingress "
                    "rule"),
    col("Address", S, "Address is a list containing ingress points for the load-balancer"),
    col("Ports", S, "Ports of TLS configurations that open"), AGE_COL])
register("networking.k8s.io", "IngressClass", row=_ingress_class_row, columns=[
    NAME_COL, col("Controller", S, "Controller that is responsible for handling this class"),
    col("Parameters", S, "A reference to a resource with additional parameters"), AGE_COL])
register("networking.k8s.io", "NetworkPolicy", columns=[
    NAME_COL, col("Pod-Selector", S, "Selects the pods to which this NetworkPolicy object "
                                     "applies."), AGE_COL],
         row=lambda o, now: [name(o), format_selector((o.get("spec") or {}).get("podSelector")
                                                           or {}), age(o, now)])
register("discovery.k8s.io", "EndpointSlice", row=_eps_row, columns=[
    NAME_COL, col("AddressType", S, "addressType specifies the type of address carried by this "
                                    "EndpointSlice."),
    col("Ports", S, "ports specifies the list of network ports exposed by each endpoint in "
                    "this slice."),
    col("Endpoints", S, "endpoints is a list of unique endpoints in this slice."), AGE_COL])
register("storage.k8s.io", "StorageClass", row=_sc_row, columns=[
    NAME_COL, col("Provisioner", S, "provisioner indicates the type of the provisioner."),
    col("ReclaimPolicy", S, "reclaimPolicy controls the reclaimPolicy for dynamically "
                            "provisioned PersistentVolumes of this storage class."),
    col("VolumeBindingMode", S, "volumeBindingMode indicates how PersistentVolumeClaims should "
                                "be provisioned and bound."),
    col("AllowVolumeExpansion", S, "allowVolumeExpansion shows whether the storage class "
                                   "allow volume expand."), AGE_COL])
register("coordination.k8s.io", "Lease", columns=[
    NAME_COL, col("Holder", S, "holderIdentity contains the identity of the holder of a "
                               "current lease."), AGE_COL],
         row=lambda o, now: [name(o), (o.get("spec") or {}).get("holderIdentity") or "",
                             age(o, now)])
register("scheduling.k8s.io", "PriorityClass", columns=[
    NAME_COL, col("Value", I, "value represents the integer value of this priority class."),
    col("Global-Default", B, "globalDefault specifies whether this PriorityClass should be "
                             "considered as the default priority for pods that do not have "
                             "any priority class."), AGE_COL,
    col("PreemptionPolicy", S, "preemptionPolicy is the Policy for preempting pods with lower "
                               "priority.")],
         row=lambda o, now: [name(o), o.get("value", 0), bool(o.get("globalDefault")),
                             age(o, now), o.get("preemptionPolicy") or "PreemptLowerPriority"])
register("policy", "PodDisruptionBudget", columns=[
    NAME_COL, col("Min Available", S, "The minimum number of pods that must be available."),
    col("Max Unavailable", S, "The maximum number of pods that may be unavailable."),
    col("Allowed Disruptions", I, "Calculated number of pods that may be disrupted at this "
                                  "time."), AGE_COL],
         row=lambda o, now: [name(o), str((o.get("spec") or {}).get("minAvailable", "N/A")),
                             str((o.get("spec") or {}).get("maxUnavailable", "N/A")),
                             (o.get("status") or {}).get("disruptionsAllowed", 0), age(o, now)])
register("node.k8s.io", "RuntimeClass", columns=[
    NAME_COL, col("Handler", S, "handler specifies the underlying runtime and configuration "
                                "that the CRI implementation will use to handle pods of this "
                                "class."), AGE_COL],
         row=lambda o, now: [name(o), o.get("handler", ""), age(o, now)])
for _kind in ("Role", "ClusterRole"):
    register("rbac.authorization.k8s.io", _kind, columns=CRD_COLUMNS[0], row=_created_at)
for _kind in ("RoleBinding", "ClusterRoleBinding"):
    register("rbac.authorization.k8s.io", _kind, row=_binding_row, columns=[
        NAME_COL, col("Role", S, "RoleRef can reference a Role in the current namespace or a "
                                 "ClusterRole in the global namespace."), AGE_COL,
        col("Users", S, f"Users in the {_kind[0].lower() + _kind[1:]}", 1),
        col("Groups", S, f"Groups in the {_kind[0].lower() + _kind[1:]}", 1),
        col("ServiceAccounts", S, f"ServiceAccounts in the {_kind[0].lower() + _kind[1:]}", 1)])
register("apiextensions.k8s.io", "CustomResourceDefinition", columns=CRD_COLUMNS[0],
         row=_created_at)
for _kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
    register("admissionregistration.k8s.io", _kind, columns=[
        NAME_COL, col("Webhooks", I, "Webhooks indicates the number of webhooks registered in "
                                     "this configuration"), AGE_COL],
             row=lambda o, now: [name(o), len(o.get("webhooks") or []), age(o, now)])
