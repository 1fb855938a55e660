"""The official `kubernetes` Python client against a real k3py server: CRUD, optimistic
concurrency (409), pagination, selectors, watch (incl. resume after restart and 410), 401."""

from __future__ import annotations

import json
import ssl
import threading
import urllib.error
import urllib.request

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.harness import wait_for

pytestmark = pytest.mark.integration


def cm(name: str, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def test_crud_and_conflict(server):
    v1 = client.CoreV1Api(server.client())
    created = v1.create_namespaced_config_map("default", cm("pc1", a="1"))
    assert created.metadata.resource_version
    got = v1.read_namespaced_config_map("pc1", "default")
    assert got.data == {"a": "1"}
    got.data["a"] = "2"
    updated = v1.replace_namespaced_config_map("pc1", "default", got)
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    stale = created
    stale.data = {"a": "stale"}
    with pytest.raises(ApiException) as e:
        v1.replace_namespaced_config_map("pc1", "default", stale)
    assert e.value.status == 409
    assert "the object has been modified" in e.value.body
    v1.delete_namespaced_config_map("pc1", "default")
    with pytest.raises(ApiException) as e:
        v1.read_namespaced_config_map("pc1", "default")
    assert e.value.status == 404


def test_pagination_and_selectors(server):
    v1 = client.CoreV1Api(server.client())
    v1.create_namespace({"metadata": {"name": "paging"}})
    for i in range(25):
        body = cm(f"item-{i:02d}", i=str(i))
        body["metadata"]["labels"] = {"parity": "even" if i % 2 == 0 else "odd"}
        v1.create_namespaced_config_map("paging", body)
    names, token = [], None
    pages = 0
    while True:
        page = v1.list_namespaced_config_map("paging", limit=10, _continue=token)
        pages += 1
        # every namespace also holds kube-root-ca.crt (the root-CA publisher), as upstream
        names += [i.metadata.name for i in page.items if i.metadata.name != "kube-root-ca.crt"]
        token = page.metadata._continue
        if not token:
            break
    assert pages == 3
    assert names == sorted(f"item-{i:02d}" for i in range(25))
    even = v1.list_namespaced_config_map("paging", label_selector="parity in (even)")
    assert len(even.items) == 13
    one = v1.list_namespaced_config_map("paging", field_selector="metadata.name=item-03")
    assert [i.metadata.name for i in one.items] == ["item-03"]
    with pytest.raises(ApiException) as e:
        v1.list_namespaced_config_map("paging", label_selector="a in (")
    assert e.value.status == 400


def test_watch_events_and_resume(server):
    v1 = client.CoreV1Api(server.client())
    start = v1.list_namespaced_config_map("default").metadata.resource_version
    v1.create_namespaced_config_map("default", cm("w1", a="1"))
    v1.patch_namespaced_config_map("w1", "default", {"data": {"a": "2"}})
    v1.delete_namespaced_config_map("w1", "default")
    seen = []
    w = watch.Watch()
    for ev in w.stream(v1.list_namespaced_config_map, "default", resource_version=start,
                       timeout_seconds=5):
        if ev["object"].metadata.name == "w1":
            seen.append((ev["type"], (ev["object"].data or {}).get("a")))
        if len(seen) == 3:
            w.stop()
    assert seen == [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")]


def test_watch_selection_left_and_entered(server):
    """watch.Watch with a label selector: an update out of it is DELETED with the object as
    it was (old labels, old data) at the update's resourceVersion, one back into it ADDED;
    a Table watch (kubectl get -w's) has the rows of the same versions (DATA: 1 key, 2)."""
    v1 = client.CoreV1Api(server.client())
    body = cm("sel", v="1")
    body["metadata"]["labels"] = {"a": "1"}
    start = v1.create_namespaced_config_map("default", body).metadata.resource_version
    left = v1.patch_namespaced_config_map("sel", "default", {
        "metadata": {"labels": {"a": "2"}}, "data": {"w": "2"}}).metadata.resource_version
    back = v1.patch_namespaced_config_map("sel", "default", {
        "metadata": {"labels": {"a": "1"}}}).metadata.resource_version
    seen = []
    w = watch.Watch()
    for ev in w.stream(v1.list_namespaced_config_map, "default", label_selector="a=1",
                       resource_version=start, timeout_seconds=2):
        obj = ev["object"]
        if obj.metadata.name == "sel":
            seen.append((ev["type"], obj.metadata.labels, obj.data,
                         obj.metadata.resource_version))
        if len(seen) == 2:
            w.stop()
    assert seen == [("DELETED", {"a": "1"}, {"v": "1"}, left),
                    ("ADDED", {"a": "1"}, {"v": "1", "w": "2"}, back)]
    resp = v1.list_namespaced_config_map(
        "default", label_selector="a=1", resource_version=start, watch=True, timeout_seconds=1,
        _preload_content=False,
        _headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    rows = [json.loads(line) for line in resp.data.decode().splitlines()]
    rows = [(e["type"], e["object"]["metadata"]["resourceVersion"], row["cells"][1],
             row["object"]["metadata"]["labels"])
            for e in rows for row in e["object"]["rows"] if row["cells"][0] == "sel"]
    assert rows == [("DELETED", left, 1, {"a": "1"}), ("ADDED", back, 2, {"a": "1"})]


def test_watch_too_old_resource_version_is_410(fresh_server):
    srv = fresh_server
    srv.extra_args = ["--compact-interval", "0.5", "--compact-min-retain", "5"]
    srv.start()
    v1 = client.CoreV1Api(srv.client())
    first = v1.create_namespaced_config_map("default", cm("old")).metadata.resource_version
    for i in range(30):
        v1.patch_namespaced_config_map("old", "default", {"data": {"i": str(i)}})

    def compacted() -> bool:
        try:
            v1.list_namespaced_config_map("default", resource_version=first,
                                          resource_version_match="Exact")
        except ApiException as e:
            return e.status == 410
        return False
    wait_for(compacted, 20, 0.2, "compaction past the first revision")
    w = watch.Watch()
    with pytest.raises(ApiException) as e:
        for _ in w.stream(v1.list_namespaced_config_map, "default", resource_version=first,
                          timeout_seconds=3):
            pass
    assert e.value.status == 410
    # the ERROR event's bytes as kube-apiserver writes them
    resp = v1.list_namespaced_config_map("default", resource_version=first, watch=True,
                                         timeout_seconds=3, _preload_content=False)
    line = resp.data.decode()
    current = line.split("(")[1].split(")")[0]
    assert line == (
        '{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},'
        '"status":"Failure","message":"too old resource version: ' + first + ' (' + current +
        ')","reason":"Expired","code":410}}\n')


def test_anonymous_is_401_and_health_is_open(server):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(f"{server.url}/healthz", context=ctx) as r:
        assert r.status == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{server.url}/api/v1/namespaces", context=ctx)
    assert e.value.code == 401
    req = urllib.request.Request(f"{server.url}/api/v1/namespaces",
                                 headers={"Authorization": "Bearer not-a-token"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, context=ctx)
    assert e.value.code == 401


def test_watch_resumes_after_restart_and_writes_survive_kill9(fresh_server):
    srv = fresh_server.start()
    v1 = client.CoreV1Api(srv.client())
    rv = v1.create_namespaced_config_map("default", cm("before", a="1")).metadata.resource_version
    acked = []
    for i in range(50):
        acked.append(v1.create_namespaced_config_map("default", cm(f"k{i}")).metadata.name)
    srv.kill9()
    srv.start()
    v1 = client.CoreV1Api(srv.client())
    names = {i.metadata.name for i in v1.list_namespaced_config_map("default").items}
    assert set(acked) <= names
    # a watch from a resourceVersion before the restart replays everything after it
    seen: list[str] = []
    done = threading.Event()

    def run() -> None:
        w = watch.Watch()
        for ev in w.stream(v1.list_namespaced_config_map, "default", resource_version=rv,
                           timeout_seconds=10):
            if ev["object"].metadata.name != "kube-root-ca.crt":  # the root-CA publisher's
                seen.append(ev["object"].metadata.name)
            if ev["object"].metadata.name == "after":
                w.stop()
        done.set()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    v1.create_namespaced_config_map("default", cm("after"))
    wait_for(done.is_set, 20, 0.1, "watch to see the post-restart write")
    assert seen[:50] == acked
    assert seen[-1] == "after"


def _body(e: ApiException) -> str:
    return e.body.decode() if isinstance(e.body, bytes) else e.body


def test_status_bodies_are_upstreams_text(server):
    # some clients and tests compare the text: field order, no spaces, the final newline
    v1 = client.CoreV1Api(server.client())
    apps = client.AppsV1Api(server.client())
    with pytest.raises(ApiException) as e:
        v1.read_namespaced_config_map("nope", "default")
    assert e.value.status == 404
    assert _body(e.value) == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        '"message":"configmaps \\"nope\\" not found","reason":"NotFound",'
        '"details":{"name":"nope","kind":"configmaps"},"code":404}\n')
    v1.create_namespaced_config_map("default", cm("dup"))
    with pytest.raises(ApiException) as e:
        v1.create_namespaced_config_map("default", cm("dup"))
    assert e.value.status == 409
    assert _body(e.value) == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        '"message":"configmaps \\"dup\\" already exists","reason":"AlreadyExists",'
        '"details":{"name":"dup","kind":"configmaps"},"code":409}\n')
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad"},
              "spec": {"replicas": -1, "selector": {"matchLabels": {"a": "b"}},
                       "template": {"metadata": {"labels": {"a": "b"}}, "spec": {
                           "containers": [{"name": "c", "image": "busybox"}]}}}}
    with pytest.raises(ApiException) as e:
        apps.create_namespaced_deployment("default", deploy)
    assert e.value.status == 422
    assert _body(e.value) == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        '"message":"Deployment.apps \\"bad\\" is invalid: spec.replicas: Invalid value: -1: '
        'must be greater than or equal to 0","reason":"Invalid","details":{"name":"bad",'
        '"group":"apps","kind":"Deployment","causes":[{"reason":"FieldValueInvalid",'
        '"message":"Invalid value: -1: must be greater than or equal to 0",'
        '"field":"spec.replicas"}]},"code":422}\n')
    # objects end with the newline too
    resp = v1.read_namespaced_config_map("dup", "default", _preload_content=False)
    assert resp.data.endswith(b"}\n")
    v1.delete_namespaced_config_map("dup", "default")
