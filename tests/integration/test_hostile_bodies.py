"""Hostile request bodies against a live server: YAML alias bombs, deep nesting and values JSON
cannot carry are answered 400 at once, the server's memory stays put, and it keeps serving."""

from __future__ import annotations

import json

import pytest

from tests.harness import rss_kib

pytestmark = pytest.mark.integration

# Nine levels of nine aliases: 9^9 (387 million) strings once expanded, in about 500 bytes.
BOMB = """apiVersion: v1
kind: ConfigMap
metadata: {name: lol}
data:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

CM_PATH = "/api/v1/namespaces/default/configmaps"


def _send(server, method: str, path: str, body: str | bytes, content_type: str):
    pool = server.client().rest_client.pool_manager  # TLS and the admin's client cert
    body = body.encode() if isinstance(body, str) else body
    r = pool.request(method, server.url + path, body=body, timeout=30,
                     headers={"Content-Type": content_type, "Accept": "application/json"})
    return r.status, json.loads(r.data or b"{}")


def _expect_400(server, method: str, path: str, body: str | bytes, content_type: str,
                words: str) -> None:
    status, answer = _send(server, method, path, body, content_type)
    assert status == 400, (status, answer)
    assert answer["kind"] == "Status" and answer["reason"] == "BadRequest", answer
    assert words in answer["message"], answer["message"]


def test_yaml_alias_bomb_is_refused_without_growing_the_server(server):
    before = rss_kib(server.proc.pid)
    _expect_400(server, "POST", CM_PATH, BOMB, "application/yaml", "excessive aliasing")
    _expect_400(server, "PATCH", CM_PATH + "/lol?fieldManager=t", BOMB,
                "application/apply-patch+yaml", "excessive aliasing")
    assert rss_kib(server.proc.pid) - before < 50 * 1024
    assert server.kubectl("get", "configmap", "lol", check=False).returncode != 0
    server.kubectl("get", "ns", "default")


@pytest.mark.parametrize("body, content_type, words", [
    ("[" * 3000 + "]" * 3000, "application/yaml", "nesting deeper than"),
    ("[" * 300 + "]" * 300, "application/json", "nesting deeper than"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\ndata: !!set {a, b}\n",
     "application/yaml", "no JSON equivalent"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\nbinaryData: {a: !!binary aGk=}\n",
     "application/yaml", "no JSON equivalent"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\ndata: {1: x}\n",
     "application/yaml", "map keys must be strings"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\ndata: {~: x}\n",
     "application/yaml", "map keys must be strings"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s, x: " + "9" * 5000 + "}\n",
     "application/yaml", "64-bit range"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s}\n---\nkind: Pod\n",
     "application/yaml", "single YAML document"),
])
def test_bodies_json_cannot_carry_are_400(server, body, content_type, words):
    _expect_400(server, "POST", CM_PATH, body, content_type, words)


def test_deep_patch_is_400(server):
    server.kubectl("create", "configmap", "deep")
    _expect_400(server, "PATCH", CM_PATH + "/deep", '{"data":' * 300 + "{}" + "}" * 300,
                "application/merge-patch+json", "nesting deeper than")


def test_yaml_timestamps_and_merge_keys_convert_like_upstream(server):
    body = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: when}\n"
            "data: {<<: {day: 2020-01-01}, id: abc}\n")
    status, obj = _send(server, "POST", CM_PATH, body, "application/yaml")
    assert status == 201, obj
    assert obj["data"] == {"day": "2020-01-01", "id": "abc"}


def test_body_over_3_mib_is_413_status(server):
    big = '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big"},"data":{"a":"' + \
        "x" * (3 * 1024 * 1024) + '"}}'
    status, answer = _send(server, "POST", CM_PATH, big, "application/json")
    assert status == 413, (status, answer)
    assert answer["reason"] == "RequestEntityTooLarge"
    assert answer["message"] == "Request entity too large: limit is 3145728"
    server.kubectl("get", "ns", "default")


def test_configmap_data_over_1_mib_is_422(server):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "huge"},
            "data": {"a": "x" * (600 * 1024), "b": "y" * (600 * 1024)}}
    status, answer = _send(server, "POST", CM_PATH, json.dumps(body), "application/json")
    assert status == 422, (status, answer)
    assert answer["reason"] == "Invalid"
    assert "Too long: may not be more than 1048576 bytes" in answer["message"]
    for bad in ([1, 2], "x"):  # wrong shape: a 422, never a 500
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shape"},
                "data": bad}
        status, answer = _send(server, "POST", CM_PATH, json.dumps(body), "application/json")
        assert status in (400, 422), (status, answer)


def _cm(**metadata) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "typed", **metadata}}


@pytest.mark.parametrize("body, words", [
    (_cm(name=5), "cannot unmarshal number into Go struct field ConfigMap.metadata.name "
                  "of type string"),
    ({**_cm(), "apiVersion": 1}, "Go struct field .apiVersion of type string"),
    ({**_cm(), "kind": []}, "Go struct field .kind of type string"),
    (_cm(generateName=5), "ConfigMap.metadata.generateName"),
    (_cm(finalizers="x"), "ConfigMap.metadata.finalizers of type []string"),
    (_cm(finalizers=[1]), "ConfigMap.metadata.finalizers of type string"),
    (_cm(ownerReferences="x"), "ConfigMap.metadata.ownerReferences of type []v1.OwnerReference"),
    (_cm(managedFields="x"), "ConfigMap.metadata.managedFields"),
    (_cm(deletionGracePeriodSeconds="x"), "deletionGracePeriodSeconds of type int64"),
    ({**_cm(), "data": {"a": 1}}, "ConfigMap.data.a of type string"),
])
def test_wrong_types_are_400_before_any_default_runs(server, body, words):
    status, answer = _send(server, "POST", CM_PATH, json.dumps(body), "application/json")
    assert status == 400, (status, answer)
    assert answer["reason"] == "BadRequest" and words in answer["message"], answer["message"]


def test_wrong_types_by_patch_are_400_too(server):
    server.kubectl("create", "configmap", "patched")
    for body, content_type in (('{"data": {"a": 1}}', "application/merge-patch+json"),
                               ('[{"op": "add", "path": "/data", "value": {"a": 1}}]',
                                "application/json-patch+json")):
        status, answer = _send(server, "PATCH", CM_PATH + "/patched", body, content_type)
        assert status == 400, (status, answer)
        assert "ConfigMap.data.a of type string" in answer["message"], answer["message"]
    assert "data" not in server.kubectl_json("get", "configmap", "patched")


def test_owner_references_validated_and_quantities_may_be_numbers(server):
    refs = [{"x": 1}]
    status, answer = _send(server, "POST", CM_PATH, json.dumps(_cm(ownerReferences=refs)),
                           "application/json")
    assert status == 422, (status, answer)
    assert "apiVersion must not be empty" in answer["message"]
    two = [{"apiVersion": "v1", "kind": "ConfigMap", "name": n, "uid": n, "controller": True}
           for n in ("a", "b")]
    status, answer = _send(server, "POST", CM_PATH, json.dumps(_cm(ownerReferences=two)),
                           "application/json")
    assert status == 422 and "Only one reference" in answer["message"], answer
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q"},
           "spec": {"containers": [{"name": "c", "image": "busybox",
                                    "resources": {"limits": {"cpu": 1, "memory": "1Gi"}},
                                    "ports": [{"containerPort": 80}]}]}}
    status, answer = _send(server, "POST", "/api/v1/namespaces/default/pods", json.dumps(pod),
                           "application/json")
    assert status == 201, answer  # a number is a fine Quantity, as upstream


# 300 KiB of control characters: within ConfigMap's 1 MiB of data, but 6 bytes each in JSON
# ("\u0001"), so 1.8 MiB as stored: over the 1.5 MiB an object may take in the store.
_ESCAPED = "\x01" * (300 * 1024)


def _expect_413_object(server, method: str, path: str, body: dict | list, content_type: str):
    status, answer = _send(server, method, path, json.dumps(body), content_type)
    assert status == 413, (status, answer)
    assert answer["reason"] == "RequestEntityTooLarge", answer
    assert answer["message"].startswith("Request entity too large: the ConfigMap would be "), \
        answer["message"]
    assert answer["message"].endswith(" bytes in storage, the limit is 1572864")


def test_object_over_1_5_mib_in_storage_is_413_on_every_write(server):
    _expect_413_object(server, "POST", CM_PATH, {**_cm(name="escaped"), "data": {"a": _ESCAPED}},
                       "application/json")
    assert server.kubectl("get", "configmap", "escaped", check=False).returncode != 0
    server.kubectl("create", "configmap", "grows", "--from-literal=a=small")
    old = server.kubectl_json("get", "configmap", "grows")
    _expect_413_object(server, "PUT", CM_PATH + "/grows", {**old, "data": {"a": _ESCAPED}},
                       "application/json")
    _expect_413_object(server, "PATCH", CM_PATH + "/grows", {"data": {"a": _ESCAPED}},
                       "application/merge-patch+json")
    _expect_413_object(server, "PATCH", CM_PATH + "/grows",
                       [{"op": "replace", "path": "/data/a", "value": _ESCAPED}],
                       "application/json-patch+json")
    _expect_413_object(server, "PATCH", CM_PATH + "/grows?fieldManager=big&force=true",
                       {**_cm(name="grows"), "data": {"a": _ESCAPED}},
                       "application/apply-patch+yaml")
    _expect_413_object(server, "PATCH", CM_PATH + "/applied?fieldManager=big",
                       {**_cm(name="applied"), "data": {"a": _ESCAPED}},
                       "application/apply-patch+yaml")
    assert server.kubectl_json("get", "configmap", "grows")["data"] == {"a": "small"}
    half = "\x01" * (150 * 1024)  # 0.9 MiB stored: fine
    status, answer = _send(server, "PATCH", CM_PATH + "/grows", json.dumps({"data": {"a": half}}),
                           "application/merge-patch+json")
    assert status == 200, answer


def test_limit_and_timeout_seconds_out_of_range(server):
    """limit= beyond any store is every item; beyond int64 (and timeoutSeconds too) a 400 as
    upstream's parse, never a 500 from the SQL LIMIT or the timer."""
    for limit in ("99999999999", str((1 << 63) - 1), "-5"):
        status, answer = _send(server, "GET", f"{CM_PATH}?limit={limit}", b"", "")
        assert status == 200 and answer["kind"] == "ConfigMapList", (limit, status, answer)
    for query in (f"limit={1 << 63}", "limit=1" + "0" * 400, f"watch=1&timeoutSeconds={1 << 64}",
                  "watch=1&timeoutSeconds=" + "9" * 5000):
        status, answer = _send(server, "GET", f"{CM_PATH}?{query}", b"", "")
        assert status == 400 and answer["reason"] == "BadRequest", (query[:40], answer)
