"""JSON patch, merge patch and strategic merge patch against upstream's semantics and errors."""

from __future__ import annotations

import copy

import pytest

from k3py.api import errors
from k3py.api.patch import (
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
    find_unknown_fields,
    schema_lookup,
)

pytestmark = pytest.mark.unit

POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "p", "labels": {"a": "1"}, "finalizers": ["x.io/a"]},
    "spec": {
        "containers": [
            {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}],
             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
             "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
            {"name": "side", "image": "busybox"},
        ],
        "volumes": [{"name": "data", "emptyDir": {}}],
        "tolerations": [{"key": "k1", "operator": "Exists"}],
    },
}


def pod() -> dict:
    return copy.deepcopy(POD)


def smp(doc: dict, patch: dict) -> dict:
    return apply_strategic_merge_patch(doc, patch, schema_lookup(doc["apiVersion"], doc["kind"]))


# ------------------------------------------------------------------ JSON patch


def test_json_patch_all_ops():
    doc = {"a": {"b": 1}, "l": [1, 2, 3]}
    out = apply_json_patch(doc, [
        {"op": "add", "path": "/a/c", "value": 2},
        {"op": "add", "path": "/l/1", "value": 9},
        {"op": "add", "path": "/l/-", "value": 4},
        {"op": "remove", "path": "/l/0"},
        {"op": "replace", "path": "/a/b", "value": "x"},
        {"op": "copy", "from": "/a", "path": "/copied"},
        {"op": "move", "from": "/a/c", "path": "/moved"},
        {"op": "test", "path": "/moved", "value": 2},
        {"op": "add", "path": "/esc~1aped~0", "value": True},
    ])
    assert out == {"a": {"b": "x"}, "l": [9, 2, 3, 4], "copied": {"b": "x", "c": 2},
                   "moved": 2, "esc/aped~": True}


def test_json_patch_root_replace():
    assert apply_json_patch({"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}]) == \
        {"b": 2}


@pytest.mark.parametrize("ops", [
    [{"op": "test", "path": "/a", "value": 2}],
    [{"op": "remove", "path": "/missing"}],
    [{"op": "replace", "path": "/missing", "value": 1}],
    [{"op": "add", "path": "/x/y", "value": 1}],
    [{"op": "add", "path": "/l/5", "value": 1}],
    [{"op": "move", "from": "/nope", "path": "/a"}],
    [{"op": "bogus", "path": "/a"}],
    [{"op": "add", "path": "/a"}],
])
def test_json_patch_failures_are_422_like_upstream(ops):
    with pytest.raises(errors.StatusError) as e:
        apply_json_patch({"a": 1, "l": [1]}, ops)
    assert e.value.code == 422 and e.value.reason == "Invalid"
    assert e.value.message == "the server rejected our request due to an error in our request"


def test_json_patch_test_bool_is_not_int():
    with pytest.raises(errors.StatusError):
        apply_json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": True}])


def test_json_patch_not_a_list_is_400():
    with pytest.raises(errors.StatusError) as e:
        apply_json_patch({}, {"op": "add"})
    assert e.value.code == 400


# ------------------------------------------------------------------ merge patch


def test_merge_patch_rfc7386():
    doc = {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}
    out = apply_merge_patch(doc, {"a": "z", "c": {"f": None, "n": {"x": None, "y": 1}},
                                  "l": [3]})
    assert out == {"a": "z", "c": {"d": "e", "n": {"y": 1}}, "l": [3]}


def test_merge_patch_replaces_non_object():
    assert apply_merge_patch({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}


# ------------------------------------------------------------------ strategic merge patch


def test_smp_containers_merge_by_name():
    out = smp(pod(), {"spec": {"containers": [{"name": "web", "image": "nginx:2"},
                                              {"name": "new", "image": "redis"}]}})
    names = [c["name"] for c in out["spec"]["containers"]]
    assert names == ["web", "side", "new"]
    web = out["spec"]["containers"][0]
    assert web["image"] == "nginx:2" and web["ports"] == [{"containerPort": 80}]


def test_smp_env_merges_and_deletes():
    out = smp(pod(), {"spec": {"containers": [{"name": "web", "env": [
        {"name": "B", "value": "3"}, {"name": "C", "value": "4"},
        {"name": "A", "$patch": "delete"}]}]}})
    assert out["spec"]["containers"][0]["env"] == [{"name": "B", "value": "3"},
                                                   {"name": "C", "value": "4"}]


def test_smp_ports_merge_by_container_port():
    out = smp(pod(), {"spec": {"containers": [{"name": "web", "ports": [
        {"containerPort": 80, "name": "http"}, {"containerPort": 443}]}]}})
    assert out["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "name": "http"},
                                                     {"containerPort": 443}]


def test_smp_service_ports_merge_by_port():
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 53}]}}
    out = smp(svc, {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}})
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 9090}, {"port": 53}]


def test_smp_volumes_retain_keys():
    out = smp(pod(), {"spec": {"volumes": [
        {"name": "data", "hostPath": {"path": "/x"}, "$retainKeys": ["hostPath", "name"]}]}})
    assert out["spec"]["volumes"] == [{"name": "data", "hostPath": {"path": "/x"}}]


def test_smp_retain_keys_mismatch_is_422():
    with pytest.raises(errors.StatusError) as e:
        smp(pod(), {"spec": {"volumes": [
            {"name": "data", "hostPath": {"path": "/x"}, "$retainKeys": ["name"]}]}})
    assert e.value.code == 422


def test_smp_deployment_strategy_retain_keys():
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
           "spec": {"strategy": {"type": "RollingUpdate",
                                 "rollingUpdate": {"maxSurge": 1}}}}
    out = smp(dep, {"spec": {"strategy": {"type": "Recreate", "$retainKeys": ["type"]}}})
    assert out["spec"]["strategy"] == {"type": "Recreate"}


def test_smp_finalizers_merge_as_set_and_delete_from_primitive_list():
    out = smp(pod(), {"metadata": {"finalizers": ["x.io/b", "x.io/a"]}})
    assert out["metadata"]["finalizers"] == ["x.io/a", "x.io/b"]
    out = smp(out, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x.io/a"]}})
    assert out["metadata"]["finalizers"] == ["x.io/b"]


def test_smp_lists_without_strategy_are_replaced():
    out = smp(pod(), {"spec": {"tolerations": [{"key": "k2", "operator": "Exists"}],
                               "containers": [{"name": "web", "args": ["a"]}]}})
    assert out["spec"]["tolerations"] == [{"key": "k2", "operator": "Exists"}]
    out = smp(out, {"spec": {"containers": [{"name": "web", "args": ["b"]}]}})
    assert out["spec"]["containers"][0]["args"] == ["b"]


def test_smp_patch_replace_list_and_map():
    out = smp(pod(), {"spec": {"containers": [{"name": "only", "image": "x"},
                                              {"$patch": "replace"}]}})
    assert out["spec"]["containers"] == [{"name": "only", "image": "x"}]
    out = smp(pod(), {"metadata": {"labels": {"b": "2", "$patch": "replace"}}})
    assert out["metadata"]["labels"] == {"b": "2"}


def test_smp_patch_delete_map_and_null_deletes_field():
    out = smp(pod(), {"metadata": {"labels": {"$patch": "delete"}}})
    assert out["metadata"]["labels"] == {}
    out = smp(pod(), {"spec": {"tolerations": None}, "metadata": {"labels": {"a": None}}})
    assert "tolerations" not in out["spec"] and out["metadata"]["labels"] == {}


def test_smp_set_element_order():
    out = smp(pod(), {"spec": {"$setElementOrder/containers": [{"name": "side"},
                                                               {"name": "web"}],
                               "containers": [{"name": "web", "image": "n"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["side", "web"]
    out = smp(pod(), {"spec": {"containers": [{"name": "web", "$setElementOrder/env": [
        {"name": "B"}, {"name": "A"}], "env": [{"name": "A", "value": "9"}]}]}})
    assert out["spec"]["containers"][0]["env"] == [{"name": "B", "value": "2"},
                                                   {"name": "A", "value": "9"}]


def test_smp_missing_merge_key_is_an_error():
    with pytest.raises(errors.StatusError) as e:
        smp(pod(), {"spec": {"containers": [{"image": "x"}]}})
    assert "does not contain declared merge key: name" in e.value.message


def test_smp_bad_directive_is_400():
    with pytest.raises(errors.StatusError) as e:
        smp(pod(), {"metadata": {"$patch": "explode"}})
    assert e.value.code == 400


def test_smp_new_fields_have_directives_stripped():
    out = smp(pod(), {"spec": {"initContainers": [{"name": "i", "image": "x",
                                                   "env": [{"name": "Z", "value": "1"}]}]}})
    assert out["spec"]["initContainers"] == [{"name": "i", "image": "x",
                                              "env": [{"name": "Z", "value": "1"}]}]


def test_smp_delete_directive_on_absent_list_is_dropped():
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {}}
    out = smp(svc, {"spec": {"ports": [{"$patch": "delete", "port": 80, "protocol": "TCP"},
                                       {"port": 81}]}})
    assert out["spec"]["ports"] == [{"port": 81}]


def test_smp_unknown_kind_falls_back_to_merge_patch():
    cr = {"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"l": [{"name": "a"}]}}
    out = apply_strategic_merge_patch(cr, {"spec": {"l": [{"name": "b"}]}}, None)
    assert out["spec"]["l"] == [{"name": "b"}]


def test_schema_lookup_and_unknown_fields():
    assert schema_lookup("v1", "Pod") is not None
    assert schema_lookup("example.com/v1", "Widget") is None
    obj = pod()
    obj["spec"]["containers"][0]["bogus"] = 1
    obj["spec"]["nodeSelector"] = {"any": "key"}
    assert find_unknown_fields("v1", "Pod", obj) == ["spec.containers[0].bogus"]


def test_json_patch_copies_bounded_in_bytes():
    """Each copy doubling a value: 24 tiny ops were gigabytes before the 3 MiB bound."""
    doc = {"data": {"v0": "x" * 1024}}
    ops = [{"op": "copy", "from": "/data", "path": f"/data/v{i}"} for i in range(1, 25)]
    with pytest.raises(errors.StatusError) as e:
        apply_json_patch(doc, ops)
    assert e.value.code == 422
    assert "accumulated size increase of copy" in e.value.detail
    small = [{"op": "copy", "from": "/data/v0", "path": "/data/c"}]
    assert apply_json_patch({"data": {"v0": "x"}}, small)["data"]["c"] == "x"
