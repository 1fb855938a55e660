"""CustomResourceDefinitions against a real k3py server with kubectl: apply a CRD, wait for
Established, CRUD custom objects with printer columns, scale, validation, the KubeEdge devices."""

from __future__ import annotations

import json

import pytest

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
