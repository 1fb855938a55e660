"""The everyday kubectl verbs against a real k3py server: get/apply/create/describe/label/
annotate/scale/patch/delete, tables, output formats, discovery, errors as kubectl prints them."""

from __future__ import annotations

import json

import pytest

from tests.harness import wait_for

pytestmark = pytest.mark.integration

DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:1.36
        command: ["sleep", "3600"]
        ports:
        - containerPort: 80
        env:
        - {name: A, value: "1"}
"""


def test_get_namespaces_table(server):
    out = server.kubectl("get", "ns").stdout
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "AGE"]
    names = {line.split()[0] for line in lines[1:]}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    assert all(line.split()[1] == "Active" for line in lines[1:])


def test_api_resources_and_short_names(server):
    out = server.kubectl("api-resources").stdout
    assert "deployments" in out and "deploy" in out and "apps/v1" in out
    assert "configmaps" in out and "cm" in out
    server.kubectl("get", "po,svc,cm,deploy")
    server.kubectl("get", "all")


def test_configmap_crud_and_output_formats(server):
    server.kubectl("create", "configmap", "cfg", "--from-literal=a=1", "--from-literal=b=2")
    obj = server.kubectl_json("get", "cm", "cfg")
    assert obj["data"] == {"a": "1", "b": "2"}
    assert obj["metadata"]["uid"] and obj["metadata"]["resourceVersion"]
    assert obj["metadata"]["creationTimestamp"].endswith("Z")
    out = server.kubectl("get", "cm", "cfg", "-o", "jsonpath={.data.a}").stdout
    assert out == "1"
    out = server.kubectl("get", "cm", "cfg", "-o", "yaml").stdout
    assert "name: cfg" in out
    table = server.kubectl("get", "cm", "cfg").stdout.splitlines()
    assert table[0].split() == ["NAME", "DATA", "AGE"]
    assert table[1].split()[:2] == ["cfg", "2"]
    server.kubectl("label", "cm", "cfg", "tier=backend")
    server.kubectl("annotate", "cm", "cfg", "note=hello")
    obj = server.kubectl_json("get", "cm", "cfg")
    assert obj["metadata"]["labels"] == {"tier": "backend"}
    assert obj["metadata"]["annotations"]["note"] == "hello"
    out = server.kubectl("get", "cm", "-l", "tier=backend", "-o", "name").stdout
    assert out.strip() == "configmap/cfg"
    out = server.kubectl("get", "cm", "-l", "tier!=backend", "-o", "name").stdout
    assert "configmap/cfg" not in out
    server.kubectl("patch", "cm", "cfg", "--type=merge", "-p", '{"data":{"c":"3"}}')
    server.kubectl("patch", "cm", "cfg", "--type=json",
                   "-p", '[{"op":"remove","path":"/data/a"}]')
    obj = server.kubectl_json("get", "cm", "cfg")
    assert obj["data"] == {"b": "2", "c": "3"}
    out = server.kubectl("delete", "cm", "cfg").stdout
    assert 'configmap "cfg" deleted' in out
    err = server.kubectl("get", "cm", "cfg", check=False)
    assert err.returncode == 1
    assert 'Error from server (NotFound): configmaps "cfg" not found' in err.stderr


def test_apply_deployment_reapply_and_scale(server):
    out = server.kubectl("apply", "-f", "-", input=DEPLOY).stdout
    assert "deployment.apps/web created" in out
    out = server.kubectl("apply", "-f", "-", input=DEPLOY).stdout
    assert "deployment.apps/web unchanged" in out
    changed = DEPLOY.replace('value: "1"', 'value: "2"')
    out = server.kubectl("apply", "-f", "-", input=changed).stdout
    assert "deployment.apps/web configured" in out
    obj = server.kubectl_json("get", "deploy", "web")
    c = obj["spec"]["template"]["spec"]["containers"][0]
    assert c["env"] == [{"name": "A", "value": "2"}]
    # upstream defaults are visible
    assert obj["spec"]["strategy"]["type"] == "RollingUpdate"
    assert obj["spec"]["revisionHistoryLimit"] == 10
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["ports"][0]["protocol"] == "TCP"
    out = server.kubectl("scale", "deploy", "web", "--replicas=3").stdout
    assert "scaled" in out
    assert server.kubectl_json("get", "deploy", "web")["spec"]["replicas"] == 3
    header = server.kubectl("get", "deploy").stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    server.kubectl("describe", "deploy", "web")
    server.kubectl("delete", "deploy", "web")


LIST = """
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: listed}
  data: {a: "1"}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: listed}
  spec:
    selector: {matchLabels: {app: listed}}
    template:
      metadata: {labels: {app: listed}}
      spec:
        containers: [{name: c, image: busybox:1.36}]
"""


def test_apply_list_validates_with_openapi_v2_protobuf(server):
    # kind List is not in the v3 index: kubectl validates it with the v2 protobuf document
    out = server.kubectl("apply", "-f", "-", input=LIST).stdout
    assert "configmap/listed created" in out and "deployment.apps/listed created" in out
    assert server.kubectl_json("get", "cm", "listed")["data"] == {"a": "1"}
    server.kubectl("get", "deploy", "listed")
    bad = LIST.replace('data: {a: "1"}', 'data: {a: "1"}\n  bogus: 1')
    err = server.kubectl("apply", "--validate=strict", "-f", "-", input=bad, check=False)
    assert err.returncode == 1
    assert 'unknown field "bogus"' in err.stderr and "error validating" in err.stderr
    server.kubectl("delete", "-f", "-", input=LIST)


def test_create_duplicate_is_already_exists(server):
    server.kubectl("create", "namespace", "dup")
    err = server.kubectl("create", "namespace", "dup", check=False)
    assert err.returncode == 1
    assert 'Error from server (AlreadyExists): namespaces "dup" already exists' in err.stderr


def test_invalid_deployment_is_422(server):
    bad = DEPLOY.replace("replicas: 2", "replicas: -1")
    err = server.kubectl("apply", "-f", "-", input=bad, check=False)
    assert err.returncode == 1
    assert "is invalid" in err.stderr and "spec.replicas" in err.stderr
    mismatch = DEPLOY.replace("labels: {app: web}\n    spec:", "labels: {app: other}\n    spec:")
    err = server.kubectl("apply", "-f", "-", input=mismatch, check=False)
    assert err.returncode == 1
    assert "does not match template `labels`" in err.stderr


def test_invalid_name_is_422(server):
    err = server.kubectl("create", "configmap", "Bad_Name", check=False)
    assert err.returncode == 1
    assert "Invalid" in err.stderr or "invalid" in err.stderr
    assert "RFC 1123" in err.stderr


def test_dry_run_server_does_not_persist(server):
    server.kubectl("create", "configmap", "dry", "--dry-run=server", "--from-literal=a=b")
    assert server.kubectl("get", "cm", "dry", check=False).returncode == 1


def test_generate_name(server):
    out = server.kubectl("create", "-f", "-", "-o", "json", input=json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}})).stdout
    name = json.loads(out)["metadata"]["name"]
    assert name.startswith("gen-") and len(name) == len("gen-") + 5


def test_namespace_delete_removes_contents(server):
    server.kubectl("create", "namespace", "doomed")
    server.kubectl("-n", "doomed", "create", "configmap", "x", "--from-literal=a=b")
    server.kubectl("delete", "namespace", "doomed", "--wait=false")

    def gone() -> bool:
        return server.kubectl("get", "ns", "doomed", check=False).returncode == 1
    wait_for(gone, 30, 0.2, "namespace doomed to be deleted")
    out = server.kubectl("get", "cm", "-A", "-o", "name", "--field-selector",
                         "metadata.namespace=doomed").stdout
    assert out.strip() == ""


def test_server_side_apply(server):
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: '1'\n"
    out = server.kubectl("apply", "--server-side", "-f", "-", input=cm).stdout
    assert "serverside-applied" in out
    obj = server.kubectl_json("get", "cm", "ssa", "--show-managed-fields")
    managers = {m["manager"] for m in obj["metadata"]["managedFields"]}
    assert "kubectl" in managers
    err = server.kubectl("apply", "--server-side", "--field-manager=other", "-f", "-",
                         input=cm.replace("'1'", "'2'"), check=False)
    assert err.returncode == 1 and "conflict" in err.stderr.lower()
    server.kubectl("apply", "--server-side", "--field-manager=other", "--force-conflicts",
                   "-f", "-", input=cm.replace("'1'", "'2'"))
    assert server.kubectl_json("get", "cm", "ssa")["data"]["a"] == "2"


def test_apiservices(server):
    # a Local APIService per served group version, as on any cluster, and one per CRD group
    # version (upstream's crdregistration controller)
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "gadgets.shop.example.com"},
           "spec": {"group": "shop.example.com", "scope": "Namespaced",
                    "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                        "openAPIV3Schema": {"type": "object",
                                            "x-kubernetes-preserve-unknown-fields": True}}}]}}
    server.kubectl("apply", "-f", "-", input=json.dumps(crd))

    def rows() -> dict[str, list[str]]:
        lines = server.kubectl("get", "apiservices").stdout.splitlines()
        return {line.split()[0]: line.split() for line in lines[1:]}
    wait_for(lambda: "v1.shop.example.com" in rows(), 20, 0.3, "the CRD group's APIService")
    out = server.kubectl("get", "apiservices").stdout.splitlines()
    assert out[0].split() == ["NAME", "SERVICE", "AVAILABLE", "AGE"]
    got = rows()
    for name in ("v1.", "v1.apps", "v1.batch", "v2.autoscaling", "v1.autoscaling",
                 "v1.rbac.authorization.k8s.io", "v1.apiextensions.k8s.io",
                 "v1.shop.example.com", "v1beta1.metrics.k8s.io"):
        assert got[name][1:3] == ["Local", "True"], (name, got.get(name))
    core = server.kubectl_json("get", "apiservice", "v1.")
    assert core["spec"] == {"group": "", "version": "v1", "groupPriorityMinimum": 18000,
                            "versionPriority": 1}
    assert "service" not in core["spec"]
    cond = core["status"]["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Available", "True", "Local")
    apps = server.kubectl_json("get", "apiservice", "v1.apps")["spec"]
    assert (apps["groupPriorityMinimum"], apps["versionPriority"]) == (17800, 15)
    # deleting the CRD removes its group's APIService
    server.kubectl("delete", "crd", "gadgets.shop.example.com")
    wait_for(lambda: "v1.shop.example.com" not in rows(), 30, 0.3, "CRD APIService removed")

    # a user's APIService for an aggregated server: stored, reported unavailable, its group
    # version answered 503
    metrics = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
               "metadata": {"name": "v1beta1.custom.metrics.k8s.io"},
               "spec": {"group": "custom.metrics.k8s.io", "version": "v1beta1",
                        "groupPriorityMinimum": 100, "versionPriority": 100,
                        "insecureSkipTLSVerify": True,
                        "service": {"name": "prometheus-adapter", "namespace": "kube-system"}}}
    server.kubectl("apply", "-f", "-", input=json.dumps(metrics))
    try:
        wait_for(lambda: rows().get("v1beta1.custom.metrics.k8s.io", [])[1:4] ==
                 ["kube-system/prometheus-adapter", "False", "(ServiceNotFound)"], 20, 0.3,
                 "APIService reported ServiceNotFound")
        obj = server.kubectl_json("get", "apiservice", "v1beta1.custom.metrics.k8s.io")
        assert obj["spec"]["service"]["port"] == 443
        cond = obj["status"]["conditions"][0]
        assert cond["message"] == 'service/prometheus-adapter in "kube-system" is not present'
        out = server.kubectl("get", "--raw", "/apis/custom.metrics.k8s.io/v1beta1/pods",
                             check=False)
        assert out.returncode != 0
        assert "ServiceUnavailable" in out.stderr and "does not proxy" in out.stderr
        # the Service appears: the next reason (no endpoints) is reported
        server.kubectl("create", "service", "clusterip", "prometheus-adapter", "-n",
                       "kube-system", "--tcp=443:4443")
        wait_for(lambda: rows()["v1beta1.custom.metrics.k8s.io"][2:4] !=
                 ["False", "(ServiceNotFound)"],
                 20, 0.3, "APIService status follows its Service")
        assert rows()["v1beta1.custom.metrics.k8s.io"][2] == "False"
    finally:
        server.kubectl("delete", "apiservice", "v1beta1.custom.metrics.k8s.io",
                       "--ignore-not-found")
        server.kubectl("delete", "service", "prometheus-adapter", "-n", "kube-system",
                       "--ignore-not-found")
    # validation as upstream's
    bad = dict(metrics, metadata={"name": "wrong"})
    out = server.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert out.returncode != 0
    assert 'must be `spec.version+"."+spec.group`: "v1beta1.custom.metrics.k8s.io"' in \
        out.stderr


@pytest.mark.parametrize("name, selector", [
    ("watched", ""), ("labelled", "&labelSelector=step%3D2"),
    ("named", "&fieldSelector=metadata.name%3Dnamed")])
def test_watch_events_carry_the_object_as_get_returns_it(server, name, selector):
    """A watch sends the stored bytes with the resourceVersion spliced in (Registry.watch
    raw), with a label or field selector too: the same object GET returns, Go's escapes
    included."""
    server.kubectl("create", "configmap", name, "--from-literal=a=<b>&c")
    server.kubectl("label", "configmap", name, "step=2")
    got = server.kubectl("get", "--raw", f"/api/v1/namespaces/default/configmaps/{name}").stdout
    lines = server.kubectl("get", "--raw", "/api/v1/namespaces/default/configmaps"
                           "?watch=true&timeoutSeconds=1" + selector).stdout.splitlines()
    watched = [json.loads(line) for line in lines if f'"name":"{name}"' in line]
    assert [e["type"] for e in watched] == ["ADDED"]
    assert watched[0]["object"] == json.loads(got)
    assert "\\u003cb\\u003e\\u0026c" in next(line for line in lines if f'"{name}"' in line)


def _replayed(server, path: str, rv: str, query: str, name: str) -> list[dict]:
    """The events of `name` that a watch on `path` with `query` replays from `rv` (it ends
    after a second: every write was made before it started)."""
    lines = server.kubectl("get", "--raw", f"{path}?watch=true&timeoutSeconds=1&"
                           f"resourceVersion={rv}&{query}").stdout.splitlines()
    events = [json.loads(line) for line in lines]
    return [e for e in events if e["object"]["metadata"]["name"] == name]


def _at(obj: dict, rv: str) -> dict:
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": rv}}


def test_watch_sends_an_object_leaving_the_label_selection_as_it_was(server):
    """As upstream's watch cache: an update that takes an object out of a watch's label
    selection is DELETED with the object as the watcher last saw it (old labels, old data)
    at the update's resourceVersion; one that brings it back is ADDED with the new object."""
    path = "/api/v1/namespaces/default/configmaps"

    def change(*args: str) -> dict:
        """The object once `args` ran, as the API sends it (kubectl label -o json prints
        the object it sent; get -o json leaves out managedFields)."""
        server.kubectl(*args)
        return json.loads(server.kubectl("get", "--raw", f"{path}/leaving").stdout)

    server.kubectl("create", "configmap", "leaving", "--from-literal=v=1")
    labelled = change("label", "configmap", "leaving", "a=1")
    edited = change("patch", "configmap", "leaving", "--type=merge", "-p", '{"data":{"v":"2"}}')
    left = change("label", "configmap", "leaving", "a=2", "--overwrite")
    back = change("label", "configmap", "leaving", "a=1", "--overwrite")
    events = _replayed(server, path, labelled["metadata"]["resourceVersion"],
                       "labelSelector=a%3D1", "leaving")
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED", "ADDED"]
    assert events[0]["object"] == edited
    gone = events[1]["object"]
    assert gone["metadata"]["labels"] == {"a": "1"} and gone["data"] == {"v": "2"}
    assert gone == _at(edited, left["metadata"]["resourceVersion"])
    assert events[2]["object"] == back


def _event(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Event",
                       "metadata": {"name": name, "namespace": "default"},
                       "involvedObject": {"kind": "ConfigMap", "name": name,
                                          "namespace": "default"},
                       "reason": "Testing", "message": "first", "type": "Normal"})


@pytest.mark.parametrize("name, path", [
    ("leaving-core", "/api/v1/namespaces/default/events"),
    ("leaving-events", "/apis/events.k8s.io/v1/namespaces/default/events")])
def test_watch_sends_an_object_leaving_the_field_selection_as_it_was(server, name, path):
    """The same with a field selector on a field an update changes (an Event's type), as
    stored and as converted to events.k8s.io/v1."""
    def read() -> dict:
        return json.loads(server.kubectl("get", "--raw", f"{path}/{name}").stdout)

    def patch(change: str) -> dict:
        server.kubectl("patch", "event", name, "--type=merge", "-p", change)
        return read()

    server.kubectl("create", "-f", "-", input=_event(name))
    created = read()
    edited = patch('{"message":"second"}')
    left = patch('{"type":"Warning"}')
    back = patch('{"type":"Normal"}')
    events = _replayed(server, path, created["metadata"]["resourceVersion"],
                       "fieldSelector=type%3DNormal", name)
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED", "ADDED"]
    assert events[0]["object"] == edited
    gone = events[1]["object"]
    assert gone["type"] == "Normal" and left["type"] == "Warning"
    assert gone == _at(edited, left["metadata"]["resourceVersion"])
    assert events[2]["object"] == back
