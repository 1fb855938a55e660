"""REST path parsing and discovery documents, without a server."""

from __future__ import annotations

import pytest

from k3py.api import errors
from k3py.api.resources import builtin_registry
from k3py.server.apiserver.discovery import Discovery
from k3py.server.apiserver.paths import parse_resource_path

pytestmark = pytest.mark.unit

REG = builtin_registry()


@pytest.mark.parametrize("path,plural,ns,name,sub", [
    ("/api/v1/pods", "pods", None, None, ""),
    ("/api/v1/namespaces/default/pods", "pods", "default", None, ""),
    ("/api/v1/namespaces/default/pods/web", "pods", "default", "web", ""),
    ("/api/v1/namespaces/default/pods/web/status", "pods", "default", "web", "status"),
    ("/api/v1/namespaces/default/pods/web/log", "pods", "default", "web", "log"),
    ("/api/v1/namespaces", "namespaces", None, None, ""),
    ("/api/v1/namespaces/kube-system", "namespaces", None, "kube-system", ""),
    ("/api/v1/namespaces/kube-system/finalize", "namespaces", None, "kube-system", "finalize"),
    ("/api/v1/namespaces/status/status", "namespaces", None, "status", "status"),
    ("/apis/apps/v1/namespaces/x/deployments/d/scale", "deployments", "x", "d", "scale"),
    ("/api/v1/nodes/n1", "nodes", None, "n1", ""),
])
def test_parse(path, plural, ns, name, sub):
    rp = parse_resource_path(path, REG)
    assert rp is not None and rp.resource is not None
    assert (rp.resource.plural, rp.namespace, rp.name, rp.subresource) == (plural, ns, name, sub)


def test_legacy_watch_prefix():
    rp = parse_resource_path("/api/v1/watch/namespaces/default/pods", REG)
    assert rp.legacy_watch and rp.resource.plural == "pods" and rp.namespace == "default"


def test_group_version_document():
    rp = parse_resource_path("/apis/apps/v1", REG)
    assert rp.resource is None and rp.group == "apps"


@pytest.mark.parametrize("path", ["/api/v1/nothings", "/apis/nogroup/v1/x",
                                  "/api/v1/namespaces/default/pods/web/bogus",
                                  "/api/v1/pods/web"])
def test_not_found(path):
    with pytest.raises(errors.StatusError) as e:
        parse_resource_path(path, REG)
    assert e.value.code == 404


def test_not_api_path():
    assert parse_resource_path("/healthz", REG) is None


def test_discovery_lists_subresources_and_short_names():
    d = Discovery(REG, "127.0.0.1:6443")
    core = d.resource_list("", "v1")
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["pods"]["shortNames"] == ["po"]
    assert "all" in by_name["pods"]["categories"]
    assert by_name["pods/eviction"]["group"] == "policy"
    assert by_name["namespaces"]["namespaced"] is False
    apps = d.resource_list("apps", "v1")
    scale = {r["name"]: r for r in apps["resources"]}["deployments/scale"]
    assert scale["kind"] == "Scale" and scale["group"] == "autoscaling"
    groups = {g["name"] for g in d.api_group_list()["groups"]}
    assert {"apps", "batch", "networking.k8s.io", "apiextensions.k8s.io"} <= groups


def test_aggregated_discovery_shape():
    d = Discovery(REG)
    doc = d.aggregated(core=False)
    assert doc["kind"] == "APIGroupDiscoveryList"
    apps = next(i for i in doc["items"] if i["metadata"]["name"] == "apps")
    deploy = next(r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments")
    assert deploy["scope"] == "Namespaced"
    assert {"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1",
                                                     "kind": "Scale"},
            "verbs": ["get", "patch", "update"]} in deploy["subresources"]


def test_discovery_cache_follows_registry_generation():
    from k3py.api.resources import Resource, ResourceRegistry
    reg = ResourceRegistry(REG)
    d = Discovery(reg)
    assert "example.com" not in {g["name"] for g in d.api_group_list()["groups"]}
    reg.add(Resource(group="example.com", version="v1", kind="Widget", plural="widgets", crd=True))
    assert "example.com" in {g["name"] for g in d.api_group_list()["groups"]}
