"""Server-side apply and managed fields: FieldsV1 sets, re-apply, removal, conflicts, force."""

from __future__ import annotations

import copy

import pytest

from k3py.api import errors
from k3py.api.apply import (
    decode_fields,
    encode_fields,
    field_set,
    fields_v1,
    path_string,
    server_side_apply,
    update_managed_fields,
)
from k3py.api.patch import schema_lookup

pytestmark = pytest.mark.unit

DEPLOY = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{
                "name": "web", "image": "nginx:1",
                "ports": [{"containerPort": 80}],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            }]},
        },
    },
}


def config(**changes) -> dict:
    obj = copy.deepcopy(DEPLOY)
    for path, value in changes.items():
        node = obj
        *parents, last = path.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return obj


def apply(live, cfg, manager="kubectl", force=False):
    return server_side_apply(live, copy.deepcopy(cfg), manager, force, schema_lookup)


def entry(obj, manager, operation="Apply"):
    return next(e for e in obj["metadata"]["managedFields"]
                if e["manager"] == manager and e["operation"] == operation)


def test_create_records_fieldsv1_like_upstream():
    obj = apply(None, DEPLOY)
    e = entry(obj, "kubectl")
    assert e["fieldsType"] == "FieldsV1" and e["apiVersion"] == "apps/v1" and e["time"]
    f = e["fieldsV1"]
    assert f["f:metadata"] == {"f:labels": {".": {}, "f:app": {}}}
    assert f["f:spec"]["f:replicas"] == {} and f["f:spec"]["f:selector"] == {}  # atomic
    c = f["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert c["."] == {} and c["f:image"] == {} and c["f:name"] == {}
    assert 'k:{"containerPort":80,"protocol":"TCP"}' in c["f:ports"]
    assert set(c["f:env"]) == {'k:{"name":"A"}', 'k:{"name":"B"}'}
    assert obj["spec"]["replicas"] == 2 and obj["metadata"]["name"] == "web"


def test_encode_decode_round_trip_and_path_string():
    paths = {("f:spec", "f:replicas"), ("f:metadata", "f:labels"),
             ("f:metadata", "f:labels", "f:app"),
             ("f:spec", "f:c", 'k:{"name":"x"}', "f:image"), ("f:m", 'v:"a"')}
    assert decode_fields(encode_fields(paths)) == paths
    assert path_string(("f:spec", "f:c", 'k:{"name":"x"}', "f:image")) == \
        '.spec.c[name="x"].image'
    assert path_string(("f:m", 'v:"a"')) == '.m[="a"]'


def test_reapply_changed_and_removed_fields():
    live = apply(None, DEPLOY)
    cfg = config()
    cfg["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "9"}]
    del cfg["metadata"]["labels"]
    out = apply(live, cfg)
    assert out["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "A", "value": "9"}]
    assert "labels" not in out["metadata"]
    assert "f:metadata" not in entry(out, "kubectl")["fieldsV1"]


def test_conflict_with_other_manager_then_force():
    live = apply(None, DEPLOY)
    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 5
    update_managed_fields(live, scaled, "kubectl-scale")
    assert entry(scaled, "kubectl-scale", "Update")["fieldsV1"] == {
        "f:spec": {"f:replicas": {}}}
    with pytest.raises(errors.StatusError) as e:
        apply(scaled, DEPLOY)
    err = e.value
    assert err.code == 409 and err.reason == "Conflict"
    assert err.message.startswith('Apply failed with 1 conflict: conflict with "kubectl-scale" '
                                  'using apps/v1')
    assert err.message.endswith(": .spec.replicas")
    cause = err.details["causes"][0]
    assert cause["type"] == "FieldManagerConflict" and cause["field"] == ".spec.replicas"
    assert cause["message"].startswith('conflict with "kubectl-scale" using apps/v1')

    out = apply(scaled, DEPLOY, force=True)
    assert out["spec"]["replicas"] == 2
    assert all(m["manager"] != "kubectl-scale" for m in out["metadata"]["managedFields"])


def test_same_value_is_shared_not_a_conflict():
    live = apply(None, DEPLOY)
    out = apply(live, DEPLOY, manager="other")
    assert {m["manager"] for m in out["metadata"]["managedFields"]} == {"kubectl", "other"}


def test_several_conflicts_message():
    live = apply(None, DEPLOY)
    cfg = config(spec__replicas=7)
    cfg["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    with pytest.raises(errors.StatusError) as e:
        apply(live, cfg, manager="other")
    assert e.value.message.startswith('Apply failed with 2 conflicts: conflicts with "kubectl":')
    assert '- .spec.template.spec.containers[name="web"].image' in e.value.message
    assert len(e.value.details["causes"]) == 2


def test_field_kept_when_another_manager_owns_it():
    live = apply(None, DEPLOY)
    both = apply(live, {"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "web", "labels": {"app": "web"}}}, manager="other")
    cfg = config()
    del cfg["metadata"]["labels"]
    out = apply(both, cfg)
    assert out["metadata"]["labels"] == {"app": "web"}


def test_unknown_field_rejected():
    cfg = config()
    cfg["spec"]["bogus"] = 1
    with pytest.raises(errors.StatusError) as e:
        apply(None, cfg)
    assert e.value.code == 400 and "field not declared in schema" in e.value.message


def test_custom_resource_apply_uses_typed_metadata():
    cr = {"apiVersion": "example.com/v1", "kind": "Widget",
          "metadata": {"name": "w", "annotations": {"a": "b"}}, "spec": {"tags": ["x"]}}
    out = server_side_apply(None, cr, "m", False, lambda *_: None)
    assert out["metadata"]["managedFields"][0]["fieldsV1"] == {
        "f:metadata": {"f:annotations": {".": {}, "f:a": {}}}, "f:spec": {"f:tags": {}}}


def test_update_managed_fields_create_update_and_reset():
    new = copy.deepcopy(DEPLOY)
    update_managed_fields(None, new, "kubectl-create")
    e = entry(new, "kubectl-create", "Update")
    assert e["fieldsV1"]["f:spec"]["f:replicas"] == {}
    old = copy.deepcopy(new)
    new2 = copy.deepcopy(new)
    new2["metadata"]["labels"]["tier"] = "fe"
    update_managed_fields(old, new2, "kubectl-label")
    assert entry(new2, "kubectl-label", "Update")["fieldsV1"] == {
        "f:metadata": {"f:labels": {"f:tier": {}}}}
    unchanged = copy.deepcopy(new2)
    update_managed_fields(new2, unchanged, "nobody")
    assert all(m["manager"] != "nobody" for m in unchanged["metadata"]["managedFields"])
    reset = copy.deepcopy(new2)
    reset["metadata"]["managedFields"] = [{}]
    update_managed_fields(new2, reset, "kubectl-edit")
    assert "managedFields" not in reset["metadata"]


def _edits() -> list:
    def label_removed(o):
        del o["metadata"]["labels"]["app"]

    def labels_gone(o):
        del o["metadata"]["labels"]

    def env_removed(o):
        o["spec"]["template"]["spec"]["containers"][0]["env"].pop()

    def several(o):
        o["spec"]["replicas"] = 5
        o["metadata"]["annotations"] = {"a": "b"}
        o["metadata"]["finalizers"] = ["x/y"]

    def status_only(o):
        o["status"] = {"replicas": 2}
    return [label_removed, labels_gone, env_removed, several, status_only]


@pytest.mark.parametrize("edit", _edits(), ids=lambda f: f.__name__)
def test_update_walks_only_what_differs_with_the_same_result(edit, monkeypatch):
    """Fields equal in the old and new object cannot be changed or removed: walking only the
    parts that differ gives what walking both whole objects gives."""
    import k3py.api.apply as applylib
    base = copy.deepcopy(DEPLOY)
    update_managed_fields(None, base, "kubectl-create")
    other = copy.deepcopy(base)
    other["metadata"]["labels"]["tier"] = "fe"
    update_managed_fields(base, other, "kubectl-label")
    results = []
    for whole in (False, True):
        if whole:
            monkeypatch.setattr(applylib, "_differing_parts", lambda o, n: (o, n))
        new = copy.deepcopy(other)
        edit(new)
        update_managed_fields(other, new, "editor")
        results.append([{k: v for k, v in e.items() if k != "time"}
                        for e in new["metadata"]["managedFields"]])
    assert results[0] == results[1]


_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "p", "namespace": "d", "labels": {"a": "b"}, "annotations": {},
                 "finalizers": ["x/y"], "ownerReferences": [
                     {"apiVersion": "v1", "kind": "X", "name": "o", "uid": "u"}]},
    "spec": {"containers": [
        {"name": "app", "image": "i", "command": ["a", "b"], "env": [
            {"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {
                "fieldPath": "status.podIP"}}}],
         "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 53,
                                                             "protocol": "UDP"}],
         "resources": {"requests": {"cpu": "1"}, "limits": {}},
         "readinessProbe": {"httpGet": {"path": "/", "port": 80}}, "securityContext": None},
        {"name": "side", "image": "j"}],
        "tolerations": [{"key": "k", "operator": "Exists"}], "nodeSelector": {"x": "y"},
        "volumes": [{"name": "v", "emptyDir": {}}]},
    "status": {"phase": "Pending"},
}
_SVC = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": "http"},
                           {"port": 80, "protocol": "UDP"}], "selector": {"a": "b"}}}
_CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
       "data": {"k": "v", "e": ""}, "binaryData": {}}
_CUSTOM = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
           "spec": {"list": [1, 2], "nested": {"a": [{"b": 1}]}, "empty": {}}}


@pytest.mark.parametrize("obj", [DEPLOY, _POD, _SVC, _CM, _CUSTOM],
                         ids=["deployment", "pod", "service", "configmap", "custom"])
def test_fields_v1_is_the_encoded_field_set(obj):
    """A create's FieldsV1, built in one walk, is what encoding its field set gives."""
    schema = schema_lookup(obj["apiVersion"], obj["kind"])
    assert fields_v1(obj, schema) == encode_fields(field_set(obj, schema))


def test_fields_v1_of_a_remembered_spec_is_a_copy_of_its_own():
    """A second object with the same spec gets its FieldsV1 from the memo: the same as the
    walk gives, its own metadata's fields, and a changed result does not leak into a third."""
    schema = schema_lookup("v1", "Pod")
    first = fields_v1(_POD, schema)
    second_pod = copy.deepcopy(_POD)
    second_pod["metadata"]["labels"] = {"other": "label"}
    second = fields_v1(second_pod, schema)
    assert second == encode_fields(field_set(second_pod, schema))
    assert second["f:spec"] == first["f:spec"]
    second["f:spec"]["f:changed"] = {}
    assert fields_v1(_POD, schema) == encode_fields(field_set(_POD, schema))
    twice = copy.deepcopy(_POD)
    twice["spec"]["containers"][0]["env"].append({"name": "A", "value": "2"})
    for _ in range(2):  # a spec that falls back to the set is never remembered
        assert fields_v1(twice, schema) == encode_fields(field_set(twice, schema))


def test_fields_v1_with_duplicate_list_keys_falls_back_to_the_set():
    pod = copy.deepcopy(_POD)
    pod["spec"]["containers"][0]["env"].append({"name": "A", "value": "2"})
    schema = schema_lookup("v1", "Pod")
    assert fields_v1(pod, schema) == encode_fields(field_set(pod, schema))


def test_list_items_found_through_the_index_as_by_a_scan():
    """_changed looks paths up through a per-walk index (a list of 60,000 finalizers was
    scanned once per path): the same item as the scan finds, for every kind of element."""
    from k3py.api.apply import _find_item
    items = [{"name": "a", "port": 1}, {"name": "a", "port": 1}, {"port": 2},
             {"containerPort": 80, "protocol": "TCP"}, "x", 1, {"d": [1, {"e": 2}]}]
    for elem in ('k:{"name":"a","port":1}', 'k:{"port":2}', 'k:{"name":"b"}',
                 'k:{"containerPort":80,"protocol":"TCP"}', 'k:{"containerPort":80}',
                 'v:"x"', 'v:1', 'v:true', 'v:{"d":[1,{"e":2}]}', 'v:"y"', "i:2", "i:9",
                 "k:[1]", "v:not json"):
        assert _find_item(items, elem, {}) == _find_item(items, elem), elem
