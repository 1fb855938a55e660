"""CustomResourceDefinition validation messages, the Resources a CRD serves, and the CRD
lifecycle in-process (registry over a temporary SQLite store, the CRD controller running)."""

from __future__ import annotations

import copy

import pytest

from k3py.api import errors
from k3py.server import crds
from k3py.server.registry import ListOptions, Registry
from tests.unit.conftest import eventually

pytestmark = pytest.mark.unit

CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                  "listKind": "WidgetList", "shortNames": ["wd"]},
        "versions": [
            {"name": "v1alpha1", "served": True, "storage": False,
             "schema": {"openAPIV3Schema": {"type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True}}},
            {"name": "v1", "served": True, "storage": True,
             "subresources": {"status": {}, "scale": {
                 "specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
             "additionalPrinterColumns": [
                 {"name": "Color", "type": "string", "jsonPath": ".spec.color"}],
             "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                 "spec": {"type": "object", "required": ["color"], "properties": {
                     "color": {"type": "string", "enum": ["red", "blue"]},
                     "replicas": {"type": "integer", "default": 1}}},
                 "status": {"type": "object", "properties": {
                     "replicas": {"type": "integer"}}}}}}},
        ],
    },
}


def crd(**changes) -> dict:
    out = copy.deepcopy(CRD)
    for path, value in changes.items():
        node = out
        *parents, last = path.split("__")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return out


def msgs(obj: dict) -> list[str]:
    return [f'{c["field"]}: {c["message"]}' for c in crds.validate_crd(obj)]


def test_valid_crd():
    assert msgs(CRD) == []


def test_name_must_match_plural_and_group():
    assert msgs(crd(metadata__name="widget.example.com")) == [
        'metadata.name: Invalid value: "widget.example.com": must be '
        'spec.names.plural+"."+spec.group']


def test_group_needs_a_dot():
    out = msgs(crd(metadata__name="widgets.example", spec__group="example"))
    assert out == ['spec.group: Invalid value: "example": should be a domain with at least '
                   'one dot']


def test_scope():
    assert msgs(crd(spec__scope="Global")) == [
        'spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced"']
    assert msgs(crd(spec__scope=None)) == ["spec.scope: Required value"]


def test_exactly_one_storage_version():
    out = msgs(crd(spec__versions__0__storage=True))
    assert len(out) == 1 and out[0].startswith("spec.versions: Invalid value: ")
    assert out[0].endswith(": must have exactly one version marked as storage version")


def test_schema_required_and_structural():
    assert msgs(crd(spec__versions__0__schema=None)) == [
        "spec.versions[0].schema.openAPIV3Schema: Required value"]
    bad = crd(spec__versions__0__schema={"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"properties": {"a": {"type": "string"}}}}}})
    assert msgs(bad) == ["spec.versions[0].schema.openAPIV3Schema.properties[spec].type: "
                         "Required value: must not be empty for specified object fields"]


def test_names_required():
    out = msgs(crd(spec__names={"plural": "widgets"}))
    assert "spec.names.kind: Required value" in out
    assert "spec.names.listKind: Required value" in out


def test_scale_paths_and_columns():
    v = "spec.versions[1]"
    out = msgs(crd(spec__versions__1__subresources={"scale": {"specReplicasPath": ".replicas"}}))
    assert out == [f'{v}.subresources.scale.specReplicasPath: Invalid value: ".replicas": '
                   "should be a json path under .spec",
                   f"{v}.subresources.scale.statusReplicasPath: Required value"]
    out = msgs(crd(spec__versions__1__additionalPrinterColumns=[{"name": "X", "type": "str",
                                                                  "jsonPath": ".a"}]))
    assert out == [f'{v}.additionalPrinterColumns[0].type: Invalid value: "str": must be one '
                   "of boolean,date,integer,number,string"]


def test_resources_for_versions_in_priority_order():
    res = crds.resources_for(CRD)
    assert [r.version for r in res] == ["v1", "v1alpha1"]
    v1 = res[0]
    assert (v1.group, v1.kind, v1.plural, v1.singular, v1.namespaced) == \
        ("example.com", "Widget", "widgets", "widget", True)
    assert v1.crd and v1.storage_version == "v1" and v1.short_names == ("wd",)
    assert v1.subresources == ("status", "scale")
    assert v1.extra["scale"]["specReplicasPath"] == ".spec.replicas"
    assert v1.extra["printer_columns"][0]["name"] == "Color"
    assert v1.extra["schema"]["properties"]["spec"]["required"] == ["color"]
    assert res[1].subresources == () and "scale" not in res[1].extra
    order = sorted(["v1alpha1", "v2", "v1beta2", "v1", "foo", "v1beta1", "v10alpha1"],
                   key=crds.version_priority)
    assert order == ["v2", "v1", "v1beta2", "v1beta1", "v10alpha1", "v1alpha1", "foo"]


def test_builtin_kubeedge_crds_are_valid():
    for obj in crds._read_builtin():
        assert crds.validate_crd(obj) == [], obj["metadata"]["name"]
        versions = {v["name"]: v for v in obj["spec"]["versions"]}
        assert set(versions) == {"v1alpha1", "v1alpha2", "v1beta1"}
        assert [n for n, v in versions.items() if v["storage"]] == ["v1beta1"]
        assert all(v["served"] for v in versions.values())


# ------------------------------------------------------------------ in-process lifecycle


@pytest.fixture
async def cluster(env):
    custom = crds.CustomResources(env.registry)
    custom.install(env.registry.admission)
    controller = crds.CRDController(env.ctx, custom)
    await controller.start()
    env.controllers.append(controller)
    return env.registry


def crd_res(registry: Registry):
    return registry.resources.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")


async def established(registry: Registry, name: str) -> dict | None:
    obj = await registry.get(crd_res(registry), None, name)
    conds = {c["type"]: c["status"] for c in obj["status"].get("conditions") or []}
    return obj if conds.get("Established") == "True" else None


async def test_crd_is_served_established_and_cleaned_up(cluster):
    registry = cluster
    created = await registry.create(crd_res(registry), None, copy.deepcopy(CRD))
    assert crds.CLEANUP_FINALIZER in created["metadata"]["finalizers"]
    assert created["status"]["storedVersions"] == ["v1"]
    obj = await eventually(lambda: established(registry, "widgets.example.com"), timeout=10.0)
    assert obj["status"]["acceptedNames"]["kind"] == "Widget"
    assert {c["type"]: c["status"] for c in obj["status"]["conditions"]}["NamesAccepted"] == \
        "True"
    res = registry.resources.get("example.com", "v1", "widgets")
    assert res is not None and registry.resources.find("example.com", "widgets").version == "v1"

    with pytest.raises(errors.StatusError) as e:
        await registry.create(res, "default", {"apiVersion": "example.com/v1", "kind": "Widget",
                                               "metadata": {"name": "w"},
                                               "spec": {"color": "pink"}})
    assert e.value.code == 422 and 'spec.color: Unsupported value: "pink"' in e.value.message

    w = await registry.create(res, "default", {
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"color": "red", "unknown": 1}, "status": {"replicas": 9}})
    assert w["spec"] == {"color": "red", "replicas": 1}  # pruned and defaulted
    assert "status" not in w and w["metadata"]["generation"] == 1

    w["spec"]["color"] = "blue"
    w["status"] = {"replicas": 4}
    w = await registry.update(res, "default", "w", w)
    assert "status" not in w and w["metadata"]["generation"] == 2
    w["status"] = {"replicas": 4}
    w["spec"]["color"] = "red"
    w = await registry.update(res, "default", "w", w, subresource="status")
    assert w["status"] == {"replicas": 4} and w["spec"]["color"] == "blue"
    assert w["metadata"]["generation"] == 2

    old = registry.resources.get("example.com", "v1alpha1", "widgets")
    read = await registry.get(old, "default", "w")
    assert read["apiVersion"] == "example.com/v1alpha1" and read["spec"]["color"] == "blue"

    await registry.delete(crd_res(registry), None, "widgets.example.com")

    async def gone():
        return await registry.try_get(crd_res(registry), None, "widgets.example.com") is None
    await eventually(gone, timeout=10.0)
    assert registry.resources.find("example.com", "widgets") is None
    _, left = await registry.backend.list("/registry/example.com/")
    assert left == []


async def test_cleanup_of_a_stale_crd_leaves_one_made_again_alone(cluster, env):
    """The cleanup finalizer comes off the CRD being deleted (its uid), not off a CRD of the
    same name made again meanwhile (here: the controller handed the old copy)."""
    registry = cluster
    name = CRD["metadata"]["name"]
    await registry.create(crd_res(registry), None, copy.deepcopy(CRD))
    live = await eventually(lambda: established(registry, name), timeout=10.0)
    stale = copy.deepcopy(live)
    stale["metadata"].update(uid="the-deleted-one", deletionTimestamp="2026-01-01T00:00:00Z")
    await env.controllers[-1]._finalize(crd_res(registry), stale)
    now = await registry.get(crd_res(registry), None, name)
    assert crds.CLEANUP_FINALIZER in now["metadata"]["finalizers"]
    assert "Terminating" not in {c["type"] for c in now["status"]["conditions"]}


async def test_builtin_crds_install_idempotently_and_load(cluster):
    registry = cluster
    names = await crds.install_builtin_crds(registry)
    assert sorted(names) == ["devicemodels.devices.kubeedge.io", "devices.devices.kubeedge.io"]
    await crds.install_builtin_crds(registry)
    live = await registry.get(crd_res(registry), None, "devices.devices.kubeedge.io")
    assert live["metadata"]["generation"] == 1  # the second install changed nothing
    custom = crds.CustomResources(registry)  # a restarted server's: loads what is stored
    assert await custom.load() >= 2
    assert registry.resources.find("devices.kubeedge.io", "devices").version == "v1beta1"
    v1alpha2 = registry.resources.get("devices.kubeedge.io", "v1alpha2", "devices")
    device = {"apiVersion": "devices.kubeedge.io/v1alpha2", "kind": "Device",
              "metadata": {"name": "temperature", "labels": {"description": "temperature"}},
              "spec": {"deviceModelRef": {"name": "temperature-model"}, "nodeSelector": {
                  "nodeSelectorTerms": [{"matchExpressions": [
                      {"key": "", "operator": "In", "values": ["edge-node"]}]}]}},
              "status": {"twins": [{"propertyName": "temperature-status", "desired": {
                  "metadata": {"type": "string"}, "value": ""}}]}}
    out = await registry.create(v1alpha2, "default", copy.deepcopy(device))
    assert out["spec"] == device["spec"] and out["status"] == device["status"]
    v1beta1 = registry.resources.get("devices.kubeedge.io", "v1beta1", "devices")
    read = await registry.get(v1beta1, "default", "temperature")
    assert read["apiVersion"] == "devices.kubeedge.io/v1beta1"
    assert read["status"]["twins"][0]["propertyName"] == "temperature-status"


# ------------------------------------------------------------------ selectableFields


def shirts(v1_fields: list, **spec_props) -> dict:
    """A CRD of two versions as upstream's field selector tests have it: v1 names the color
    `color`, v1beta1 `hue` (conversion None: an object keeps the name it was written with)."""
    props = {"color": {"type": "string"}, "hue": {"type": "string"},
             "quantity": {"type": "integer"}, "branded": {"type": "boolean"},
             "size": {"type": "string", "enum": ["S", "M"]},
             "labels": {"type": "object", "additionalProperties": {"type": "string"}},
             "tags": {"type": "array", "items": {"type": "string"}}, **spec_props}
    schema = {"openAPIV3Schema": {"type": "object", "properties": {
        "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
        "spec": {"type": "object", "properties": props}}}}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "shirts.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "shirts", "kind": "Shirt", "singular": "shirt",
                               "listKind": "ShirtList"},
                     "versions": [
                         {"name": "v1", "served": True, "storage": True,
                          "schema": copy.deepcopy(schema), "selectableFields": v1_fields},
                         {"name": "v1beta1", "served": True, "storage": False,
                          "schema": copy.deepcopy(schema),
                          "selectableFields": [{"jsonPath": ".spec.hue"}]}]}}


def test_selectable_fields_valid_ones():
    ok = [{"jsonPath": p} for p in (".spec.color", ".spec.quantity", ".spec.branded",
                                    ".spec.size", ".spec.labels.team")]
    assert msgs(shirts(ok)) == []


def test_selectable_fields_invalid_paths_with_upstreams_messages():
    at = "spec.versions[0].selectableFields"
    bad = [{"jsonPath": p} for p in ("spec.color", ".spec.nosuch", ".spec.tags[0]", ".spec.",
                                     ".spec", ".spec.tags", ".metadata.name")] + [{}]
    assert msgs(shirts(bad)) == [
        f'{at}[0].jsonPath: Invalid value: "spec.color": is an invalid path: expected [ or . '
        "but got: spec",
        f'{at}[1].jsonPath: Invalid value: ".spec.nosuch": is an invalid path: does not refer '
        "to a valid field",
        f'{at}[2].jsonPath: Invalid value: ".spec.tags[0]": is an invalid path: array notation '
        "is not allowed",
        f'{at}[3].jsonPath: Invalid value: ".spec.": is an invalid path: unexpected end of '
        "JSON path",
        f'{at}[4].jsonPath: Invalid value: ".spec": must point to a field of type string, '
        "boolean or integer. Enum string fields and strings with formats are allowed.",
        f'{at}[5].jsonPath: Invalid value: ".spec.tags": must point to a field of type string, '
        "boolean or integer. Enum string fields and strings with formats are allowed.",
        f'{at}[6].jsonPath: Invalid value: ".metadata.name": must not point to fields in '
        "metadata",
        f"{at}[7].jsonPath: Required value"]


def test_selectable_fields_unique_and_at_most_eight():
    at = "spec.versions[0].selectableFields"
    assert msgs(shirts([{"jsonPath": ".spec.color"}, {"jsonPath": ".spec.color"}])) == [
        f'{at}[1].jsonPath: Duplicate value: ".spec.color"']
    many = {f"f{i}": {"type": "string"} for i in range(9)}
    nine = [{"jsonPath": f".spec.f{i}"} for i in range(9)]
    obj = shirts(nine, **many)
    assert msgs(obj) == [f"{at}: Too many: 9: must have at most 8 items"]
    # an update may keep a list over the limit as it was (upstream's ratcheting), not grow one
    assert crds.validate_crd(copy.deepcopy(obj), obj) == []
    eight = shirts(nine[:8], **many)
    assert [c["message"] for c in crds.validate_crd(obj, eight)] == [
        "Too many: 9: must have at most 8 items"]


def test_selectable_fields_on_each_served_version_resource():
    by_version = {r.version: r for r in crds.resources_for(shirts([{"jsonPath": ".spec.color"},
                                                                    {"jsonPath": ".spec.size"}]))}
    assert by_version["v1"].extra["selectable_fields"] == ("spec.color", "spec.size")
    assert by_version["v1beta1"].extra["selectable_fields"] == ("spec.hue",)
    assert "selectable_fields" not in crds.resources_for(CRD)[0].extra


def test_builtin_device_crd_selects_on_spec_node_name():
    device = next(c for c in crds._read_builtin() if c["spec"]["names"]["kind"] == "Device")
    served = {r.version: r for r in crds.resources_for(device)}
    assert served["v1beta1"].extra["selectable_fields"] == ("spec.nodeName",)


def _shirt(name: str, api_version: str = "example.com/v1", **spec) -> dict:
    return {"apiVersion": api_version, "kind": "Shirt", "metadata": {"name": name},
            "spec": spec}


async def _names(registry: Registry, res, selector: str) -> list[str]:
    listing = await registry.list(res, "default", ListOptions(field_selector=selector))
    return sorted(o["metadata"]["name"] for o in listing["items"])


async def test_field_selectors_on_custom_resources_list_watch_delete_collection(cluster):
    registry = cluster
    await registry.create(crd_res(registry), None, shirts(
        [{"jsonPath": ".spec.color"}, {"jsonPath": ".spec.quantity"},
         {"jsonPath": ".spec.branded"}]))
    await eventually(lambda: established(registry, "shirts.example.com"), timeout=10.0)
    v1 = registry.resources.get("example.com", "v1", "shirts")
    v1beta1 = registry.resources.get("example.com", "v1beta1", "shirts")
    await registry.create(v1, "default", _shirt("s1", color="red", quantity=2, branded=True))
    await registry.create(v1, "default", _shirt("s2", color="blue", quantity=3))
    await registry.create(v1beta1, "default", _shirt("s3", "example.com/v1beta1", hue="red"))
    start = str(await registry.current_revision())

    assert await _names(registry, v1, "spec.color=red") == ["s1"]
    assert await _names(registry, v1, "spec.quantity=2") == ["s1"]
    assert await _names(registry, v1, "spec.branded=true") == ["s1"]
    assert await _names(registry, v1, "spec.branded!=true") == ["s2", "s3"]  # absent: ""
    assert await _names(registry, v1, "spec.color=,metadata.name!=s2") == ["s3"]
    # the version requested decides: v1beta1 selects on hue, and knows no spec.color
    assert await _names(registry, v1beta1, "spec.hue=red") == ["s3"]
    with pytest.raises(errors.StatusError) as e:
        await _names(registry, v1beta1, "spec.color=red")
    assert (e.value.code, e.value.message) == (400, "field label not supported: spec.color")

    s2 = await registry.get(v1, "default", "s2")
    s2["spec"]["color"] = "red"
    await registry.update(v1, "default", "s2", s2)
    s1 = await registry.get(v1, "default", "s1")
    s1["spec"]["color"] = "green"
    await registry.update(v1, "default", "s1", s1)
    await registry.create(v1, "default", _shirt("s4", color="red"))  # the last event

    stream = await registry.watch(v1, "default", resource_version=start,
                                  field_selector="spec.color=red")
    seen = []
    async for etype, obj in stream:
        seen.append((etype, obj["metadata"]["name"]))
        if obj["metadata"]["name"] == "s4":
            break
    await stream.aclose()
    assert seen == [("ADDED", "s2"), ("DELETED", "s1"), ("ADDED", "s4")]
    gone = await registry.delete_collection(v1, "default",
                                            ListOptions(field_selector="spec.color=red"))
    assert sorted(o["metadata"]["name"] for o in gone["items"]) == ["s2", "s4"]
    assert await _names(registry, v1, "") == ["s1", "s3"]
    await registry.delete(crd_res(registry), None, "shirts.example.com")
