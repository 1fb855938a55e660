"""Structural schema validation, pruning, defaulting and unknown fields of custom objects,
checked against the exact messages and field paths the upstream apiserver returns."""

from __future__ import annotations

import pytest

from k3py.api import structural

pytestmark = pytest.mark.unit

SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["x"],
            "properties": {
                "x": {"type": "string"},
                "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
                "color": {"type": "string", "enum": ["red", "blue"]},
                "name": {"type": "string", "minLength": 3, "maxLength": 5,
                         "pattern": "^[a-z]+$"},
                "when": {"type": "string", "format": "date-time"},
                "port": {"x-kubernetes-int-or-string": True},
                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"},
                         "x-kubernetes-list-type": "set"},
                "ports": {"type": "array", "x-kubernetes-list-type": "map",
                          "x-kubernetes-list-map-keys": ["name"],
                          "items": {"type": "object", "required": ["name"], "properties": {
                              "name": {"type": "string"}, "port": {"type": "integer"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "maybe": {"type": "string", "nullable": True},
                "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                             "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    },
}


def messages(obj: dict) -> list[str]:
    return [f'{c["field"]}: {c["message"]}' for c in structural.validate(SCHEMA, obj)]


def test_valid_object_has_no_causes():
    assert messages({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
                     "spec": {"x": "y", "replicas": 3, "port": "http", "maybe": None}}) == []


def test_type_error_message_as_upstream():
    assert messages({"spec": {"x": "y", "replicas": "string"}}) == [
        'spec.replicas: Invalid value: "string": spec.replicas in body must be of type '
        'integer: "string"']
    c = structural.validate(SCHEMA, {"spec": {"x": "y", "replicas": "s"}})[0]
    assert c["type"] == "FieldValueTypeInvalid" and c["field"] == "spec.replicas"


def test_required_and_enum():
    assert messages({"spec": {"color": "pink"}}) == [
        "spec.x: Required value",
        'spec.color: Unsupported value: "pink": supported values: "red", "blue"']


def test_numeric_bounds():
    assert messages({"spec": {"x": "y", "replicas": -1}}) == [
        "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or "
        "equal to 0"]
    assert messages({"spec": {"x": "y", "replicas": 11}}) == [
        "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or "
        "equal to 10"]
    excl = {"type": "integer", "minimum": 0, "exclusiveMinimum": True}
    assert structural.validate(excl, 0, "n")[0]["message"] == \
        "Invalid value: 0: n in body should be greater than 0"


def test_string_limits_and_pattern():
    assert messages({"spec": {"x": "y", "name": "ab"}}) == [
        'spec.name: Invalid value: "ab": spec.name in body should be at least 3 chars long']
    assert messages({"spec": {"x": "y", "name": "abcdef"}}) == [
        "spec.name: Too long: may not be more than 5 bytes"]
    assert messages({"spec": {"x": "y", "name": "AB1"}}) == [
        "spec.name: Invalid value: \"AB1\": spec.name in body should match '^[a-z]+$'"]


def test_format_and_int_or_string():
    assert messages({"spec": {"x": "y", "when": "yesterday"}}) == [
        'spec.when: Invalid value: "yesterday": spec.when in body must be of type '
        'date-time: "yesterday"']
    assert messages({"spec": {"x": "y", "when": "2024-05-01T10:00:00Z", "port": 80}}) == []
    assert messages({"spec": {"x": "y", "port": True}})[0].startswith(
        'spec.port: Invalid value: "boolean": spec.port in body must be of type integer,string')


def test_arrays_items_and_list_types():
    assert messages({"spec": {"x": "y", "tags": ["a", "b", "c"]}}) == [
        "spec.tags: Too many: 3: must have at most 2 items"]
    assert messages({"spec": {"x": "y", "tags": ["a", "a"]}}) == [
        'spec.tags[1]: Duplicate value: "a"']
    assert messages({"spec": {"x": "y", "tags": ["a", 1]}}) == [
        'spec.tags[1]: Invalid value: "integer": spec.tags[1] in body must be of type '
        'string: "integer"']
    assert messages({"spec": {"x": "y", "ports": [{"name": "a"}, {"name": "a", "port": 1}]}}) \
        == ['spec.ports[1]: Duplicate value: {"name":"a"}']
    assert messages({"spec": {"x": "y", "ports": [{"port": 1}]}}) == [
        "spec.ports[0].name: Required value"]


def test_nullable_and_null():
    assert messages({"spec": {"x": None}}) == [
        'spec.x: Invalid value: "null": spec.x in body must be of type string: "null"']


def test_additional_properties_schema():
    assert messages({"spec": {"x": "y", "labels": {"a": "b", "c": 1}}}) == [
        'spec.labels.c: Invalid value: "integer": spec.labels.c in body must be of type '
        'string: "integer"']


def test_embedded_resource_needs_kind_and_api_version():
    assert messages({"spec": {"x": "y", "template": {"metadata": {}}}}) == [
        "spec.template.apiVersion: Required value: must not be empty",
        "spec.template.kind: Required value: must not be empty"]


def test_combinators():
    s = {"type": "object", "properties": {"v": {"type": "integer", "anyOf": [
        {"minimum": 5}, {"maximum": 1}], "not": {"enum": [0]}}}}
    assert structural.validate(s, {"v": 3}) == [{
        "type": "FieldValueInvalid", "field": "v",
        "message": "Invalid value: 3: v in body must validate at least one schema (anyOf)"}]
    assert structural.validate(s, {"v": 0})[0]["message"] == \
        "Invalid value: 0: v in body shouldn't validate the schema (not)"
    one = {"type": "object", "properties": {"v": {"type": "integer", "oneOf": [
        {"minimum": 1}, {"minimum": 2}]}}}
    assert structural.validate(one, {"v": 2})[0]["message"] == \
        "Invalid value: 2: v in body must validate one and only one schema (oneOf)"
    assert structural.validate(one, {"v": 1}) == []


def test_prune_drops_unknown_fields_keeps_meta_and_preserved():
    obj = {"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a", "labels": {"x": "y"}},
           "spec": {"x": "y", "junk": 1, "free": {"any": {"thing": 1}},
                    "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "z": 1}},
           "extra": True}
    structural.prune(SCHEMA, obj)
    assert obj == {"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a",
                                                                  "labels": {"x": "y"}},
                   "spec": {"x": "y", "free": {"any": {"thing": 1}},
                            "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {},
                                         "z": 1}}}


def test_prune_drops_non_nullable_nulls_only():
    obj = {"spec": {"x": None, "maybe": None}}
    structural.prune(SCHEMA, obj)
    assert obj == {"spec": {"maybe": None}}


def test_find_unknown_fields_paths():
    obj = {"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
           "spec": {"x": "y", "bogus": 1, "ports": [{"name": "a", "nope": 2}],
                    "free": {"ok": 1}}, "top": 1}
    assert structural.find_unknown_fields(SCHEMA, obj) == [
        "spec.bogus", "spec.ports[0].nope", "top"]


def test_defaults_applied_to_missing_fields_and_items():
    obj = {"spec": {"x": "y"}}
    structural.apply_defaults(SCHEMA, obj)
    assert obj["spec"]["replicas"] == 1
    items = {"type": "array", "items": {"type": "object", "properties": {
        "p": {"type": "integer", "default": 7}}}}
    lst = [{}, {"p": 1}]
    structural.apply_defaults(items, lst)
    assert lst == [{"p": 7}, {"p": 1}]


def test_check_structural_upstream_messages():
    path = "spec.versions[0].schema.openAPIV3Schema"
    causes = structural.check_structural(
        {"properties": {"spec": {"properties": {"a": {"type": "string"}}},
                        "list": {"type": "array"}}}, path)
    got = [f'{c["field"]}: {c["message"]}' for c in causes]
    assert f"{path}.type: Required value: must not be empty at the root" in got
    assert f"{path}.properties[spec].type: Required value: must not be empty for specified " \
        "object fields" in got
    assert f"{path}.properties[list].items: Required value: must be specified" in got
    assert structural.check_structural({"type": "string"}, path)[0]["message"] == \
        'Invalid value: "string": must be object at the root'
    meta = {"type": "object", "properties": {"metadata": {"type": "object", "properties": {
        "labels": {"type": "object"}}}}}
    assert [c["field"] for c in structural.check_structural(meta, path)] == [
        f"{path}.properties[metadata]"]
    int_or_string = {"type": "object", "properties": {"p": {
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}]}}}
    assert structural.check_structural(int_or_string, path) == []
