"""CustomResourceDefinitions against a real k3py server with kubectl: apply a CRD, wait for
Established, CRUD custom objects with printer columns, scale, validation, the KubeEdge devices."""

from __future__ import annotations

import json

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.harness import wait_for

pytestmark = pytest.mark.integration

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Color, type: string, jsonPath: .spec.color}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [color]
            properties:
              color: {type: string, enum: [red, blue]}
              replicas: {type: integer, minimum: 0, default: 1}
          status:
            type: object
            properties:
              replicas: {type: integer}
"""

WIDGET = """
apiVersion: example.com/v1
kind: Widget
metadata: {name: w1}
spec: {color: red}
"""

MODEL = """
apiVersion: devices.kubeedge.io/v1alpha2
kind: DeviceModel
metadata:
  name: temperature-model
  namespace: default
spec:
  properties:
    - name: temperature-status
      description: Temperature collected from the edge device
      type:
        string:
          accessMode: ReadOnly
          defaultValue: ''
"""

# kubeedge/examples temperature-demo/crds/instance.yaml, unchanged
DEVICE = """
apiVersion: devices.kubeedge.io/v1alpha2
kind: Device
metadata:
  name: temperature
  labels:
    description: 'temperature'
    manufacturer: 'test'
spec:
  deviceModelRef:
    name: temperature-model
  nodeSelector:
    nodeSelectorTerms:
      - matchExpressions:
          - key: ''
            operator: In
            values:
              - edge-node
status:
  twins:
    - propertyName: temperature-status
      desired:
        metadata:
          type: string
        value: ''
"""


def test_crd_lifecycle_with_kubectl(server):
    server.kubectl("apply", "-f", "-", input=CRD)
    server.kubectl("wait", "--for", "condition=established", "--timeout=30s",
                   "crd/widgets.example.com")
    crd = server.kubectl_json("get", "crd", "widgets.example.com")
    assert "customresourcecleanup.apiextensions.k8s.io" in crd["metadata"]["finalizers"]
    assert crd["status"]["acceptedNames"]["kind"] == "Widget"
    assert crd["status"]["storedVersions"] == ["v1"]
    wait_for(lambda: "widgets" in server.kubectl("api-resources", "--api-group=example.com")
             .stdout, 20, 0.2, "widgets in discovery")

    server.kubectl("apply", "-f", "-", input=WIDGET)
    lines = server.kubectl("get", "widgets").stdout.splitlines()
    assert lines[0].split() == ["NAME", "COLOR", "REPLICAS", "AGE"]
    assert lines[1].split()[:3] == ["w1", "red", "1"]  # replicas defaulted by the schema
    assert server.kubectl_json("get", "wd", "w1")["spec"] == {"color": "red", "replicas": 1}

    bad = server.kubectl("apply", "-f", "-", check=False,
                         input=WIDGET.replace("w1", "w2").replace("red", "pink"))
    assert bad.returncode != 0
    assert 'spec.color: Unsupported value: "pink": supported values: "red", "blue"' in bad.stderr

    server.kubectl("scale", "widget", "w1", "--replicas=3")
    assert server.kubectl_json("get", "widget", "w1")["spec"]["replicas"] == 3
    scale = json.loads(server.kubectl(
        "get", "--raw", "/apis/example.com/v1/namespaces/default/widgets/w1/scale").stdout)
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3

    server.kubectl("delete", "crd", "widgets.example.com", "--timeout=60s")
    wait_for(lambda: server.kubectl("get", "crd", "widgets.example.com", check=False)
             .returncode != 0, 30, 0.2, "CRD gone")
    gone = server.kubectl("get", "widgets", check=False)
    assert gone.returncode != 0


def test_kubeedge_device_crds_built_in(server):
    wait_for(lambda: server.kubectl("get", "devices", check=False).returncode == 0, 30, 0.2,
             "devices served")
    names = server.kubectl("get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/devices.devices.kubeedge.io" in names
    assert "customresourcedefinition.apiextensions.k8s.io/devicemodels.devices.kubeedge.io" \
        in names
    server.kubectl("apply", "-f", "-", input=MODEL)
    server.kubectl("apply", "-f", "-", input=DEVICE)
    dev = server.kubectl_json("get", "devices.v1alpha2.devices.kubeedge.io", "temperature")
    assert dev["apiVersion"] == "devices.kubeedge.io/v1alpha2"
    assert dev["spec"]["deviceModelRef"] == {"name": "temperature-model"}
    assert dev["status"]["twins"][0]["desired"] == {"metadata": {"type": "string"}, "value": ""}
    preferred = server.kubectl_json("get", "device", "temperature")
    assert preferred["apiVersion"] == "devices.kubeedge.io/v1beta1"
    assert preferred["status"]["twins"][0]["propertyName"] == "temperature-status"
    server.kubectl("apply", "-f", "-", input=DEVICE)  # re-apply unchanged is accepted
    assert "temperature" in server.kubectl("get", "devices").stdout


def test_crds_served_after_restart(fresh_server):
    fresh_server.start()
    fresh_server.kubectl("apply", "-f", "-", input=CRD)
    fresh_server.kubectl("wait", "--for", "condition=established", "--timeout=30s",
                         "crd/widgets.example.com")
    fresh_server.kubectl("apply", "-f", "-", input=WIDGET)
    fresh_server.stop()
    fresh_server.start()
    assert fresh_server.kubectl_json("get", "widget", "w1")["spec"]["color"] == "red"


def test_watch_sends_a_custom_object_leaving_the_selection_as_it_was(server):
    """A custom resource's watch (decoded, and converted for an older served version):
    an update out of its label selection is DELETED with the object as the watcher last
    saw it, at the update's resourceVersion."""
    wait_for(lambda: server.kubectl("get", "devices", check=False).returncode == 0, 30, 0.2,
             "devices served")
    server.kubectl("apply", "-f", "-", input=MODEL)
    server.kubectl("apply", "-f", "-", input=DEVICE.replace("name: temperature\n",
                                                            "name: leaving\n"))
    # (kubectl label -o json prints the object it sent, not the one written)
    server.kubectl("label", "device", "leaving", "a=1")
    start = server.kubectl_json("get", "device", "leaving")
    server.kubectl("label", "device", "leaving", "a=2", "--overwrite")
    left = server.kubectl_json("get", "device", "leaving")
    for version in ("v1beta1", "v1alpha2"):
        path = f"/apis/devices.kubeedge.io/{version}/namespaces/default/devices"
        lines = server.kubectl("get", "--raw", f"{path}?watch=true&timeoutSeconds=1&"
                               f"resourceVersion={start['metadata']['resourceVersion']}&"
                               "labelSelector=a%3D1").stdout.splitlines()
        events = [e for e in map(json.loads, lines) if e["object"]["metadata"]["name"] ==
                  "leaving"]  # (a status write while selected is a MODIFIED before)
        assert events and events[-1]["type"] == "DELETED", events
        gone = events[-1]["object"]
        assert gone["apiVersion"] == f"devices.kubeedge.io/{version}"
        assert gone["metadata"]["labels"]["a"] == "1"
        assert gone["metadata"]["resourceVersion"] == left["metadata"]["resourceVersion"]


# upstream's field selector fixture, namespaced: v1 calls the color `color`, v1beta1 `hue`
SHIRTS = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: shirts.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: shirts, singular: shirt, kind: Shirt}
  versions:
  - name: v1
    served: true
    storage: true
    selectableFields:
    - jsonPath: .spec.color
    - jsonPath: .spec.quantity
    - jsonPath: .spec.size
    - jsonPath: .spec.branded
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              color: {type: string}
              quantity: {type: integer}
              size: {type: string, enum: [S, M, L, XL]}
              branded: {type: boolean}
  - name: v1beta1
    served: true
    storage: false
    selectableFields:
    - jsonPath: .spec.hue
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              hue: {type: string}
"""


def _shirt(name: str, **spec) -> str:
    return json.dumps({"apiVersion": "example.com/v1", "kind": "Shirt",
                       "metadata": {"name": name}, "spec": spec})


def _shirts_crd(server) -> None:
    server.kubectl("apply", "-f", "-", input=SHIRTS)
    server.kubectl("wait", "--for", "condition=established", "--timeout=30s",
                   "crd/shirts.example.com")
    wait_for(lambda: server.kubectl("get", "shirts", check=False).returncode == 0, 20, 0.2,
             "shirts served")


def _selected(server, resource: str, selector: str) -> list[str]:
    out = server.kubectl("get", resource, "--field-selector", selector, "-o", "name")
    return sorted(line.rpartition("/")[2] for line in out.stdout.split())


def test_crd_selectable_fields_with_kubectl(server):
    _shirts_crd(server)
    crd = server.kubectl_json("get", "crd", "shirts.example.com")
    assert crd["spec"]["versions"][0]["selectableFields"][0] == {"jsonPath": ".spec.color"}
    assert set(crd["status"]) == {"acceptedNames", "conditions", "storedVersions"}
    for shirt in (_shirt("s1", color="red", quantity=2, size="S", branded=True),
                  _shirt("s2", color="blue", quantity=3, size="M"),
                  _shirt("s3", color="red", quantity=2, branded=False)):
        server.kubectl("apply", "-f", "-", input=shirt)

    assert _selected(server, "shirts", "spec.color=red") == ["s1", "s3"]
    assert _selected(server, "shirts", "spec.color!=red") == ["s2"]
    assert _selected(server, "shirts", "spec.quantity=2,spec.branded=false") == ["s3"]
    assert _selected(server, "shirts", "spec.size=M") == ["s2"]
    assert _selected(server, "shirts", "spec.branded=,metadata.name=s2") == ["s2"]  # absent
    # the version asked for decides: v1beta1 selects on hue, which these objects lack
    assert _selected(server, "shirts.v1beta1.example.com", "spec.hue=") == ["s1", "s2", "s3"]

    for resource, label in (("shirts", "spec.hue"), ("shirts", "spec.nosuchfield"),
                            ("shirts.v1beta1.example.com", "spec.color")):
        bad = server.kubectl("get", resource, "--field-selector", f"{label}=x", check=False)
        assert bad.returncode != 0
        assert "(BadRequest)" in bad.stderr and \
            f"field label not supported: {label}" in bad.stderr, bad.stderr

    schema = json.loads(server.kubectl("get", "--raw", "/openapi/v3/apis/example.com/v1")
                        .stdout)["components"]["schemas"]["com.example.v1.Shirt"]
    assert schema["x-kubernetes-selectable-fields"][:2] == [
        {"fieldPath": "spec.color"}, {"fieldPath": "spec.quantity"}]


def test_field_selected_watch_of_a_custom_resource(server):
    """Written first, then watched from the resourceVersion before the writes: an object
    entering the selection is ADDED, one leaving it or deleted is DELETED."""
    _shirts_crd(server)
    server.kubectl("apply", "-f", "-", input=_shirt("w1", color="red"))
    server.kubectl("apply", "-f", "-", input=_shirt("w2", color="blue"))
    server.kubectl("apply", "-f", "-", input=_shirt("w3", color="red"))
    rv = json.loads(server.kubectl("get", "--raw", "/apis/example.com/v1/shirts")
                    .stdout)["metadata"]["resourceVersion"]  # (kubectl get's List has none)
    server.kubectl("patch", "shirt", "w1", "--type=merge", "-p", '{"spec":{"color":"green"}}')
    server.kubectl("patch", "shirt", "w2", "--type=merge", "-p", '{"spec":{"color":"red"}}')
    server.kubectl("delete", "shirt", "w3")
    server.kubectl("apply", "-f", "-", input=_shirt("w4", color="red"))
    server.kubectl("apply", "-f", "-", input=_shirt("w5", color="blue"))
    lines = server.kubectl("get", "--raw", "/apis/example.com/v1/namespaces/default/shirts?"
                           f"watch=true&timeoutSeconds=1&resourceVersion={rv}&"
                           "fieldSelector=spec.color%3Dred").stdout.splitlines()
    events = [(e["type"], e["object"]["metadata"]["name"], e["object"]["spec"]["color"])
              for e in map(json.loads, lines)]
    assert events == [("DELETED", "w1", "red"), ("ADDED", "w2", "red"),
                      ("DELETED", "w3", "red"), ("ADDED", "w4", "red")]


def test_crd_with_a_bad_selectable_field_is_refused(server):
    bad = SHIRTS.replace("shirts", "coats").replace("Shirt", "Coat") \
        .replace("- jsonPath: .spec.quantity", "- jsonPath: .spec.nosuch") \
        .replace("- jsonPath: .spec.size", "- jsonPath: .spec.color")
    out = server.kubectl("apply", "-f", "-", input=bad, check=False)
    assert out.returncode != 0 and "is invalid" in out.stderr, out.stderr
    assert 'spec.versions[0].selectableFields[1].jsonPath: Invalid value: ".spec.nosuch": is ' \
        "an invalid path: does not refer to a valid field" in out.stderr
    assert 'spec.versions[0].selectableFields[2].jsonPath: Duplicate value: ".spec.color"' \
        in out.stderr
    with pytest.raises(ApiException) as e:  # the Status itself, as a client gets it
        client.ApiextensionsV1Api(server.client()).create_custom_resource_definition(
            yaml.safe_load(bad))
    status = json.loads(e.value.body)
    assert (e.value.status, status["code"], status["reason"]) == (422, 422, "Invalid"), status
    assert [c["field"] for c in status["details"]["causes"]] == [
        "spec.versions[0].selectableFields[1].jsonPath",
        "spec.versions[0].selectableFields[2].jsonPath"]
