"""Resource definitions: the tiny typed records (group, version, kind, plural, scope, verbs).

Read by the apiserver (routing, discovery), the registry (storage keys) and controllers;
CRDs add and remove entries at run time through `ResourceRegistry`."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = ["Resource", "ResourceRegistry", "BUILTIN_RESOURCES", "METRICS_RESOURCES", "ALL_VERBS",
           "builtin_registry"]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, kw_only=True)
class Resource:
    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    singular: str = ""
    verbs: tuple[str, ...] = ALL_VERBS
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()  # "status", "scale", "binding", "log", "exec", ...
    storage_version: str = ""  # the version objects are stored as; "" = this version
    crd: bool = False
    extra: dict = field(default_factory=dict, compare=False, hash=False)  # CRD schema etc.

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version(self) -> str:
        return self.api_version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def key_prefix(self, namespace: str | None = None) -> str:
        """Store key prefix; all versions of one group/resource share it."""
        group = self.group or "core"
        base = f"/registry/{group}/{self.plural}/"
        if self.namespaced and namespace:
            return f"{base}{namespace}/"
        return base

    def key(self, namespace: str | None, name: str) -> str:
        if self.namespaced:
            return f"{self.key_prefix()}{namespace}/{name}"
        return f"{self.key_prefix()}{name}"


def _r(group: str, version: str, kind: str, plural: str, **kw) -> Resource:
    return Resource(group=group, version=version, kind=kind, plural=plural, **kw)


_CRUD_NO_DC = ("create", "delete", "get", "list", "patch", "update", "watch")

BUILTIN_RESOURCES: tuple[Resource, ...] = (
    # core/v1
    _r("", "v1", "Namespace", "namespaces", namespaced=False, short_names=("ns",),
       verbs=_CRUD_NO_DC, subresources=("status", "finalize")),
    _r("", "v1", "Node", "nodes", namespaced=False, short_names=("no",),
       subresources=("status", "proxy")),
    _r("", "v1", "Pod", "pods", short_names=("po",), categories=("all",),
       subresources=("status", "binding", "eviction", "log", "exec", "attach",
                     "portforward", "ephemeralcontainers", "proxy")),
    _r("", "v1", "Service", "services", short_names=("svc",), categories=("all",),
       verbs=_CRUD_NO_DC + ("deletecollection",), subresources=("status", "proxy")),
    _r("", "v1", "Endpoints", "endpoints", short_names=("ep",), singular="endpoints"),
    _r("", "v1", "ConfigMap", "configmaps", short_names=("cm",)),
    _r("", "v1", "Secret", "secrets"),
    _r("", "v1", "ServiceAccount", "serviceaccounts", short_names=("sa",),
       subresources=("token",)),
    _r("", "v1", "Event", "events", short_names=("ev",)),
    _r("", "v1", "PersistentVolume", "persistentvolumes", namespaced=False,
       short_names=("pv",), subresources=("status",)),
    _r("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short_names=("pvc",),
       subresources=("status",)),
    _r("", "v1", "ResourceQuota", "resourcequotas", short_names=("quota",),
       subresources=("status",)),
    _r("", "v1", "LimitRange", "limitranges", short_names=("limits",)),
    _r("", "v1", "ReplicationController", "replicationcontrollers", short_names=("rc",),
       categories=("all",), subresources=("status", "scale")),
    _r("", "v1", "PodTemplate", "podtemplates"),
    # apps/v1
    _r("apps", "v1", "Deployment", "deployments", short_names=("deploy",), categories=("all",),
       subresources=("status", "scale")),
    _r("apps", "v1", "ReplicaSet", "replicasets", short_names=("rs",), categories=("all",),
       subresources=("status", "scale")),
    _r("apps", "v1", "DaemonSet", "daemonsets", short_names=("ds",), categories=("all",),
       subresources=("status",)),
    _r("apps", "v1", "StatefulSet", "statefulsets", short_names=("sts",), categories=("all",),
       subresources=("status", "scale")),
    _r("apps", "v1", "ControllerRevision", "controllerrevisions"),
    # batch/v1
    _r("batch", "v1", "Job", "jobs", categories=("all",), subresources=("status",)),
    _r("batch", "v1", "CronJob", "cronjobs", short_names=("cj",), categories=("all",),
       subresources=("status",)),
    # autoscaling: v2 preferred; v1 objects are converted (k3py.api.kinds.autoscaling)
    _r("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
       short_names=("hpa",), categories=("all",), subresources=("status",)),
    _r("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers",
       short_names=("hpa",), categories=("all",), subresources=("status",)),
    # networking.k8s.io/v1
    _r("networking.k8s.io", "v1", "Ingress", "ingresses", short_names=("ing",),
       subresources=("status",)),
    _r("networking.k8s.io", "v1", "IngressClass", "ingressclasses", namespaced=False),
    _r("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", short_names=("netpol",)),
    # storage.k8s.io/v1
    _r("storage.k8s.io", "v1", "StorageClass", "storageclasses", namespaced=False,
       short_names=("sc",)),
    _r("storage.k8s.io", "v1", "CSIDriver", "csidrivers", namespaced=False),
    _r("storage.k8s.io", "v1", "CSINode", "csinodes", namespaced=False),
    _r("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", namespaced=False,
       subresources=("status",)),
    # coordination.k8s.io/v1
    _r("coordination.k8s.io", "v1", "Lease", "leases"),
    # events.k8s.io/v1 (same storage as core events)
    _r("events.k8s.io", "v1", "Event", "events", short_names=("ev",)),
    # discovery.k8s.io/v1
    _r("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    # policy/v1
    _r("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", short_names=("pdb",),
       subresources=("status",)),
    # scheduling.k8s.io/v1
    _r("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", namespaced=False,
       short_names=("pc",)),
    # node.k8s.io/v1
    _r("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", namespaced=False),
    # authentication.k8s.io/v1, authorization.k8s.io/v1: create-only, answered by the
    # server (k3py.server.rbac.reviews), never stored
    _r("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews",
       namespaced=False, verbs=("create",)),
    _r("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews",
       namespaced=False, verbs=("create",)),
    _r("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews",
       namespaced=False, verbs=("create",)),
    _r("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews",
       namespaced=False, verbs=("create",)),
    _r("authorization.k8s.io", "v1", "LocalSubjectAccessReview", "localsubjectaccessreviews",
       verbs=("create",)),
    # rbac.authorization.k8s.io/v1 (enforced by k3py.server.rbac)
    _r("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    _r("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings",
       namespaced=False),
    # certificates / admissionregistration (stored only, clients probe for them)
    _r("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration",
       "mutatingwebhookconfigurations", namespaced=False),
    _r("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration",
       "validatingwebhookconfigurations", namespaced=False),
    # apiextensions.k8s.io/v1
    _r("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
       namespaced=False, short_names=("crd", "crds"), categories=("api-extensions",),
       subresources=("status",)),
    # apiregistration.k8s.io/v1: the local APIServices, and user ones stored with a status
    # (k3py does not proxy to aggregated API servers)
    _r("apiregistration.k8s.io", "v1", "APIService", "apiservices", namespaced=False,
       categories=("api-extensions",), subresources=("status",)),
)

# metrics.k8s.io/v1beta1, as metrics-server serves it (get and list, from memory, never
# stored): added by k3py.server.metrics unless --disable metrics-server
METRICS_RESOURCES: tuple[Resource, ...] = (
    _r("metrics.k8s.io", "v1beta1", "NodeMetrics", "nodes", namespaced=False,
       verbs=("get", "list")),
    _r("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", verbs=("get", "list")),
)

# Where a resource in one group is stored under another (kube stores events.k8s.io events
# with core events so both APIs see the same objects).
STORAGE_ALIASES: dict[tuple[str, str], tuple[str, str]] = {
    ("events.k8s.io", "events"): ("", "events"),
}


class ResourceRegistry:
    """The set of served resources, by group/version/plural. Thread-safe; CRDs mutate it."""

    def __init__(self, resources: Iterable[Resource] = ()) -> None:
        self._lock = threading.Lock()
        self._by_gvr: dict[tuple[str, str, str], Resource] = {}
        # (group, plural) -> its preferred version's Resource: find() is on every request's path
        self._preferred: dict[tuple[str, str], Resource] = {}
        self.generation = 0  # bumped on every change; discovery caches key on it
        for r in resources:
            self.add(r)

    def add(self, res: Resource) -> None:
        with self._lock:
            self._by_gvr[(res.group, res.version, res.plural)] = res
            self._prefer(res.group, res.plural)
            self.generation += 1

    def remove_group_resource(self, group: str, plural: str) -> None:
        with self._lock:
            for k in [k for k in self._by_gvr if k[0] == group and k[2] == plural]:
                del self._by_gvr[k]
            self._prefer(group, plural)
            self.generation += 1

    def _prefer(self, group: str, plural: str) -> None:
        """Index the first registered version of group/plural (under the lock)."""
        for (g, _v, p), r in self._by_gvr.items():
            if g == group and p == plural:
                self._preferred[(group, plural)] = r
                return
        self._preferred.pop((group, plural), None)

    def get(self, group: str, version: str, plural: str) -> Resource | None:
        return self._by_gvr.get((group, version, plural))

    def find(self, group: str, plural: str) -> Resource | None:
        """The preferred (first registered) version of group/plural."""
        return self._preferred.get((group, plural))

    def by_kind(self, group: str, kind: str, version: str | None = None) -> Resource | None:
        for r in list(self._by_gvr.values()):
            if r.group == group and r.kind == kind and (version is None or r.version == version):
                return r
        return None

    def by_api_version_kind(self, api_version: str, kind: str) -> Resource | None:
        group, _, version = api_version.rpartition("/")
        return self.by_kind(group, kind, version)

    def __iter__(self) -> Iterator[Resource]:
        return iter(list(self._by_gvr.values()))

    def groups(self) -> dict[str, list[str]]:
        """group -> versions in registration order (first = preferred)."""
        out: dict[str, list[str]] = {}
        for r in list(self._by_gvr.values()):
            versions = out.setdefault(r.group, [])
            if r.version not in versions:
                versions.append(r.version)
        return out

    def in_group_version(self, group: str, version: str) -> list[Resource]:
        return [r for r in list(self._by_gvr.values()) if r.group == group and r.version == version]

    def storage_prefix(self, res: Resource, namespace: str | None = None) -> str:
        alias = STORAGE_ALIASES.get((res.group, res.plural))
        if alias:
            target = self.find(*alias)
            if target is not None:
                return target.key_prefix(namespace)
        return res.key_prefix(namespace)

    def storage_key(self, res: Resource, namespace: str | None, name: str) -> str:
        prefix = self.storage_prefix(res)
        return f"{prefix}{namespace}/{name}" if res.namespaced else f"{prefix}{name}"


def builtin_registry() -> ResourceRegistry:
    return ResourceRegistry(BUILTIN_RESOURCES)
