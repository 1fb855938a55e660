"""Discovery documents: /api, /apis, /apis/<g>, <gv> resource lists, aggregated discovery v2.

Built from the ResourceRegistry and cached per registry generation (CRDs bump it)."""

from __future__ import annotations

import hashlib
from typing import Any

from k3py.api.resources import Resource, ResourceRegistry

__all__ = ["Discovery", "AGGREGATED_V2", "AGGREGATED_V2BETA1"]

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"

# subresource -> (group, version, kind, verbs); kind None = the parent's kind
_SUBRESOURCES: dict[str, tuple[str | None, str | None, str | None, tuple[str, ...]]] = {
    "status": (None, None, None, ("get", "patch", "update")),
    "scale": ("autoscaling", "v1", "Scale", ("get", "patch", "update")),
    "binding": ("", "v1", "Binding", ("create",)),
    "eviction": ("policy", "v1", "Eviction", ("create",)),
    "log": ("", "v1", "Pod", ("get",)),
    "exec": ("", "v1", "PodExecOptions", ("create", "get")),
    "attach": ("", "v1", "PodAttachOptions", ("create", "get")),
    "portforward": ("", "v1", "PodPortForwardOptions", ("create", "get")),
    "proxy": (None, None, None, ("create", "delete", "get", "patch", "update")),
    "finalize": (None, None, None, ("update",)),
    "token": ("authentication.k8s.io", "v1", "TokenRequest", ("create",)),
    "ephemeralcontainers": (None, None, None, ("get", "patch", "update")),
}
_PROXY_KIND = {"pods": "PodProxyOptions", "services": "ServiceProxyOptions",
               "nodes": "NodeProxyOptions"}


def _hash(text: str) -> str:
    import base64
    return base64.b64encode(hashlib.sha256(text.encode()).digest()[:8]).decode()


class Discovery:
    def __init__(self, resources: ResourceRegistry, server_address: str = "") -> None:
        self.resources = resources
        self.server_address = server_address
        self._gen = -1
        self._cache: dict[str, Any] = {}

    def _cached(self, key: str, build) -> Any:
        if self._gen != self.resources.generation:
            self._cache.clear()
            self._gen = self.resources.generation
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def api_versions(self) -> dict:
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                "serverAddress": self.server_address}]}

    def _group(self, group: str, versions: list[str]) -> dict:
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}

    def api_group_list(self) -> dict:
        def build() -> dict:
            groups = [self._group(g, vs) for g, vs in self.resources.groups().items() if g]
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        return self._cached("apis", build)

    def api_group(self, group: str) -> dict | None:
        versions = self.resources.groups().get(group)
        if not versions or not group:
            return None
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group(group, versions)}

    def resource_list(self, group: str, version: str) -> dict:
        def build() -> dict:
            items: list[dict] = []
            for r in self.resources.in_group_version(group, version):
                items.append(self._resource_entry(r))
                for sub in r.subresources:
                    items.append(self._sub_entry(r, sub))
            gv = f"{group}/{version}" if group else version
            return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                    "resources": items}
        return self._cached(f"rl:{group}/{version}", build)

    def _resource_entry(self, r: Resource) -> dict:
        e: dict[str, Any] = {"name": r.plural, "singularName": r.singular_name,
                             "namespaced": r.namespaced, "kind": r.kind, "verbs": list(r.verbs),
                             "storageVersionHash": _hash(f"{r.group}/{r.version}/{r.kind}")}
        if r.short_names:
            e["shortNames"] = list(r.short_names)
        if r.categories:
            e["categories"] = list(r.categories)
        return e

    def _sub_info(self, r: Resource, sub: str) -> tuple[str, str, str, tuple[str, ...]]:
        g, v, k, verbs = _SUBRESOURCES.get(sub, (None, None, None, ("get",)))
        if sub == "proxy":
            return "", "v1", _PROXY_KIND.get(r.plural, r.kind), verbs
        return (r.group if g is None else g, r.version if v is None else v,
                r.kind if k is None else k, verbs)

    def _sub_entry(self, r: Resource, sub: str) -> dict:
        g, v, k, verbs = self._sub_info(r, sub)
        e: dict[str, Any] = {"name": f"{r.plural}/{sub}", "singularName": "",
                             "namespaced": r.namespaced, "kind": k, "verbs": list(verbs)}
        if (g, v) != (r.group, r.version):
            e["group"], e["version"] = g, v
        return e

    # ------------------------------------------------------------ aggregated (v2)

    def aggregated(self, core: bool, api_version: str = "apidiscovery.k8s.io/v2") -> dict:
        def build() -> dict:
            items = []
            for group, versions in self.resources.groups().items():
                if bool(group) == core:
                    continue
                vlist = []
                for v in versions:
                    res_entries = []
                    for r in self.resources.in_group_version(group, v):
                        e: dict[str, Any] = {
                            "resource": r.plural,
                            "responseKind": {"group": r.group, "version": r.version,
                                             "kind": r.kind},
                            "scope": "Namespaced" if r.namespaced else "Cluster",
                            "singularResource": r.singular_name,
                            "verbs": list(r.verbs),
                        }
                        if r.short_names:
                            e["shortNames"] = list(r.short_names)
                        if r.categories:
                            e["categories"] = list(r.categories)
                        subs = []
                        for sub in r.subresources:
                            g, sv, k, verbs = self._sub_info(r, sub)
                            subs.append({"subresource": sub,
                                         "responseKind": {"group": g, "version": sv, "kind": k},
                                         "verbs": list(verbs)})
                        if subs:
                            e["subresources"] = subs
                        res_entries.append(e)
                    vlist.append({"version": v, "resources": res_entries,
                                  "freshness": "Current"})
                items.append({"metadata": {"name": group, "creationTimestamp": None},
                              "versions": vlist})
            return {"kind": "APIGroupDiscoveryList", "apiVersion": api_version,
                    "metadata": {}, "items": items}
        return self._cached(f"agg:{core}:{api_version}", build)
