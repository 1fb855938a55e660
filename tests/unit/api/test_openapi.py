"""OpenAPI v2/v3 documents in the shapes kubectl reads (explain, client-side apply, field
validation support detection) and the generated definitions behind them."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml

from k3py.api import openapi, openapi_pb
from k3py.api.resources import BUILTIN_RESOURCES, Resource
from k3py.api.schema import definitions

pytestmark = pytest.mark.unit

POD = "io.k8s.api.core.v1.Pod"

WIDGET = Resource(group="example.com", version="v1", kind="Widget", plural="widgets", crd=True,
                  extra={"schema": {"type": "object", "properties": {
                      "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}})


def resources() -> list[Resource]:
    return list(BUILTIN_RESOURCES) + [WIDGET]


def test_generated_definitions_carry_upstream_patch_metadata():
    d = definitions()
    containers = d["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    assert containers["x-kubernetes-list-type"] == "map"
    volumes = d["io.k8s.api.core.v1.PodSpec"]["properties"]["volumes"]
    assert volumes["x-kubernetes-patch-strategy"] == "merge,retainKeys"
    ports = d["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"]
    assert ports["x-kubernetes-patch-merge-key"] == "port"
    assert ports["x-kubernetes-list-map-keys"] == ["port", "protocol"]
    assert d["io.k8s.api.core.v1.Container"]["properties"]["ports"][
        "x-kubernetes-patch-merge-key"] == "containerPort"
    assert "x-kubernetes-patch-strategy" not in d["io.k8s.api.core.v1.PodSpec"][
        "properties"]["tolerations"]
    assert d["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"][
        "x-kubernetes-patch-strategy"] == "retainKeys"
    meta = d["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]
    assert meta["finalizers"]["x-kubernetes-patch-strategy"] == "merge"
    assert meta["ownerReferences"]["x-kubernetes-patch-merge-key"] == "uid"
    ios = d["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
    assert ios["format"] == "int-or-string" and ios["x-kubernetes-int-or-string"] is True
    assert d["io.k8s.api.core.v1.ServicePort"]["properties"]["targetPort"]["$ref"].endswith(
        "IntOrString")
    assert d[POD]["x-kubernetes-group-version-kind"] == [
        {"group": "", "kind": "Pod", "version": "v1"}]
    assert d["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"][0][
        "group"] == "apps"


def test_v2_document_shape_for_kubectl():
    doc = json.loads(openapi.openapi_v2(resources(), 1))
    assert doc["swagger"] == "2.0"
    pod = doc["definitions"][POD]
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod",
                                                       "version": "v1"}]
    for ref in (pod["properties"]["spec"]["$ref"],):
        assert ref.startswith("#/definitions/") and ref.split("/")[-1] in doc["definitions"]
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" in patch["consumes"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "", "kind": "Pod",
                                                        "version": "v1"}
    assert any(p["name"] == "fieldValidation" for p in patch["parameters"])
    widget = doc["definitions"]["com.example.v1.Widget"]
    assert widget["x-kubernetes-group-version-kind"][0]["kind"] == "Widget"
    crd_patch = doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"][
        "patch"]
    assert "application/strategic-merge-patch+json" not in crd_patch["consumes"]


def test_v3_index_and_group_documents():
    rs = resources()
    index = openapi.openapi_v3_index(rs, 1)
    assert index["paths"]["api/v1"]["serverRelativeURL"].startswith("/openapi/v3/api/v1?hash=")
    assert "apis/apps/v1" in index["paths"] and "apis/example.com/v1" in index["paths"]
    core = json.loads(openapi.openapi_v3_group_version(rs, "", "v1", 1))
    schemas = core["components"]["schemas"]
    assert schemas[POD]["x-kubernetes-group-version-kind"][0]["kind"] == "Pod"
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["items"]["$ref"] == "#/components/schemas/io.k8s.api.core.v1.Container"
    # every reference resolves inside the document (kubectl explain follows them)
    text = json.dumps(schemas)
    for ref in set(part.split('"')[0] for part in text.split("#/components/schemas/")[1:]):
        assert ref in schemas, ref
    pod_spec = {"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}
    spec = schemas[POD]["properties"]["spec"]
    assert spec == pod_spec or spec["allOf"] == [pod_spec]
    port = schemas["io.k8s.api.core.v1.ServicePort"]["properties"]["targetPort"]
    assert port["allOf"] == [{"$ref": "#/components/schemas/"
                                      "io.k8s.apimachinery.pkg.util.intstr.IntOrString"}]
    assert port["description"]  # refs with siblings are wrapped in allOf, as upstream
    patch = core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    assert any(p["name"] == "fieldValidation" for p in patch["parameters"])
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "Pod"
    assert openapi.openapi_v3_group_version(rs, "nope.io", "v1", 1) is None


def test_v3_crd_document():
    doc = json.loads(openapi.openapi_v3_group_version(resources(), "example.com", "v1", 1))
    widget = doc["components"]["schemas"]["com.example.v1.Widget"]
    assert widget["properties"]["spec"]["properties"]["size"] == {"type": "integer"}
    assert widget["properties"]["metadata"]["allOf"][0]["$ref"].endswith("ObjectMeta")
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in doc["components"]["schemas"]
    patch = doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" not in patch["requestBody"]["content"]


def test_crd_selectable_fields_listed_as_upstream():
    shirt = replace(WIDGET, extra={**WIDGET.extra, "selectable_fields": ("spec.size",)})
    rs = list(BUILTIN_RESOURCES) + [shirt]
    doc = json.loads(openapi.openapi_v3_group_version(rs, "example.com", "v1", 2))
    widget = doc["components"]["schemas"]["com.example.v1.Widget"]
    assert widget["x-kubernetes-selectable-fields"] == [{"fieldPath": "spec.size"}]
    v2 = json.loads(openapi.openapi_v2(rs, 2))["definitions"]["com.example.v1.Widget"]
    assert v2["x-kubernetes-selectable-fields"] == [{"fieldPath": "spec.size"}]
    assert "x-kubernetes-selectable-fields" not in json.loads(openapi.openapi_v3_group_version(
        resources(), "example.com", "v1", 3))["components"]["schemas"]["com.example.v1.Widget"]


def test_cache_follows_the_resource_set():
    rs = resources()
    first = openapi.openapi_v3_index(rs, 7)
    assert openapi.openapi_v3_index(rs, 7) is first
    changed = rs[:-1] + [replace(WIDGET, extra={"schema": {"type": "object"}})]
    assert openapi.openapi_v3_index(changed, 7) is not first


def test_v2_protobuf_decodes_to_the_json_document():
    body, etag = openapi.openapi_v2_protobuf(resources(), 1)
    assert etag.startswith('"') and len(etag) == 130
    doc = openapi_pb.Document.FromString(body)
    assert doc.swagger == "2.0" and doc.info.title == "Kubernetes"
    defs = {d.name: d.value for d in doc.definitions.additional_properties}
    as_json = json.loads(openapi.openapi_v2(resources(), 1))
    assert set(defs) == set(as_json["definitions"])
    for name, gvk in ((POD, {"group": "", "kind": "Pod", "version": "v1"}),
                      ("io.k8s.api.apps.v1.Deployment",
                       {"group": "apps", "kind": "Deployment", "version": "v1"}),
                      ("com.example.v1.Widget",
                       {"group": "example.com", "kind": "Widget", "version": "v1"})):
        ext = {e.name: yaml.safe_load(e.value.yaml) for e in defs[name].vendor_extension}
        assert ext["x-kubernetes-group-version-kind"] == [gvk]
    props = {p.name: p.value for p in defs[POD].properties.additional_properties}
    assert props["spec"]._ref == "#/definitions/io.k8s.api.core.v1.PodSpec"
    assert list(defs["io.k8s.api.core.v1.ConfigMap"].type.value) == ["object"]
    data = {p.name: p.value for p in defs["io.k8s.api.core.v1.ConfigMap"]
            .properties.additional_properties}["data"]
    assert list(data.additional_properties.schema.type.value) == ["string"]
    containers = {p.name: p.value for p in defs["io.k8s.api.core.v1.PodSpec"]
                  .properties.additional_properties}["containers"]
    assert containers.items.schema[0]._ref == "#/definitions/io.k8s.api.core.v1.Container"
    paths = {p.name: p.value for p in doc.paths.path}
    patch = paths["/api/v1/namespaces/{namespace}/pods/{name}"].patch
    assert "application/strategic-merge-patch+json" in patch.consumes
    assert any(p.parameter.non_body_parameter.query_parameter_sub_schema.name
               == "fieldValidation" for p in patch.parameters)
