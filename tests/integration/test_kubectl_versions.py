"""The core kubectl flows with every kubectl build the machine has (tests/harness.py
kubectl_builds(): the one on PATH, the image's `kubectl.1.NN` and the ones scripts/setup.sh
caches), against one server: version, client-side and server-side apply, get, diff, explain,
patch, delete, api-resources, auth can-i, and the OpenAPI v2 protobuf older builds ask for
(/openapi/v2 by Accept, /swagger-2.0.0.pb-v1). test_kubectl_basics.py covers the verbs in
depth with the PATH build; this module checks that each build can drive the same server."""

from __future__ import annotations

import json
import subprocess

import pytest

from k3py.api import openapi_pb
from tests.harness import kubectl_builds, wait_for
from tests.integration.test_kubectl_basics import LIST  # validated with the v2 protobuf

pytestmark = pytest.mark.integration

BUILDS = kubectl_builds()

APP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: app}
data: {greeting: hello}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, labels: {app: app}}
spec:
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
      - name: app
        image: busybox:1.36
        command: [sleep, "3600"]
        envFrom: [{configMapRef: {name: app}}]
---
apiVersion: v1
kind: Service
metadata: {name: app}
spec:
  selector: {app: app}
  ports: [{port: 80, targetPort: 8080}]
"""

class Kubectl:
    """One kubectl build against the module's server, in a namespace of its own."""

    def __init__(self, server, label: str, binary: str) -> None:
        self.server, self.label, self.binary = server, label, binary
        self.namespace = "kubectl-" + label.replace(".", "-")

    def __call__(self, *args: str, check: bool = True, input: str | None = None):
        return self.server.kubectl("-n", self.namespace, *args, check=check, input=input,
                                   binary=self.binary)

    def json(self, *args: str) -> dict:
        return json.loads(self(*args, "-o", "json").stdout)

    def raw(self, path: str) -> bytes:
        """`kubectl get --raw` as bytes (a protobuf body is not text)."""
        out = subprocess.run([self.binary, "--kubeconfig", str(self.server.kubeconfig), "get",
                              "--raw", path], capture_output=True, timeout=60)
        assert out.returncode == 0, f"kubectl {self.label} get --raw {path}: {out.stderr!r}"
        return out.stdout


@pytest.fixture(params=list(BUILDS), scope="module")
def kubectl(request, server) -> Kubectl:
    k = Kubectl(server, request.param, BUILDS[request.param])
    server.kubectl("create", "namespace", k.namespace)
    return k


def test_version(kubectl):
    version = kubectl.json("version")
    client, served = version["clientVersion"], version["serverVersion"]
    if kubectl.label != "path":
        assert f"{client['major']}.{client['minor']}" == kubectl.label
    assert served["gitVersion"].startswith("v1.") and served["platform"]


def test_apply_get_diff_patch_delete(kubectl):
    out = kubectl("apply", "-f", "-", input=APP).stdout
    for name in ("configmap/app", "deployment.apps/app", "service/app"):
        assert f"{name} created" in out
    assert kubectl("apply", "-f", "-", input=APP).stdout.count("unchanged") == 3
    wide = kubectl("get", "deploy,svc", "-o", "wide").stdout
    assert "busybox:1.36" in wide and "app=app" in wide and "80/TCP" in wide
    assert "greeting: hello" in kubectl("get", "cm", "app", "-o", "yaml").stdout
    assert kubectl("diff", "-f", "-", input=APP).returncode == 0
    changed = APP.replace("greeting: hello", "greeting: bye")
    diff = kubectl("diff", "-f", "-", input=changed, check=False)
    assert diff.returncode == 1, diff.stderr
    assert "-  greeting: hello" in diff.stdout and "+  greeting: bye" in diff.stdout
    kubectl("patch", "deploy", "app", "-p", '{"spec":{"replicas":2}}')
    kubectl("patch", "cm", "app", "--type=json",
            "-p", '[{"op":"add","path":"/data/extra","value":"1"}]')
    assert kubectl.json("get", "deploy", "app")["spec"]["replicas"] == 2
    out = kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=changed).stdout
    assert out.count("serverside-applied") == 3
    assert kubectl.json("get", "cm", "app")["data"]["greeting"] == "bye"
    kubectl("delete", "-f", "-", input=APP)

    def gone() -> bool:
        return kubectl("get", "-f", "-", "--ignore-not-found", "-o", "name",
                       input=APP).stdout.strip() == ""
    wait_for(gone, 30, 0.2, f"kubectl {kubectl.label}: the app's objects to be deleted")


def test_explain(kubectl):
    out = kubectl("explain", "deployment.spec.replicas").stdout
    assert "KIND:" in out and "Deployment" in out and "replicas" in out
    out = kubectl("explain", "--output=plaintext-openapiv2", "configmap.data").stdout
    assert "ConfigMap" in out and "data" in out


def test_api_resources_and_auth_can_i(kubectl):
    out = kubectl("api-resources").stdout
    assert "deployments" in out and "apps/v1" in out and "configmaps" in out
    assert kubectl("auth", "can-i", "create", "deployments").stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "--list").stdout.splitlines()[0].split()[0] == "Resources"


def test_openapi_v2_protobuf(kubectl):
    out = kubectl("apply", "--validate=strict", "-v=6", "-f", "-", input=LIST)
    assert "configmap/listed created" in out.stdout and "deployment.apps/listed created" in out.stdout
    assert any("/openapi/v2" in line and "200 OK" in line for line in out.stderr.splitlines())
    bad = LIST.replace('data: {a: "1"}', 'data: {a: "1"}\n  bogus: 1')
    err = kubectl("apply", "--validate=strict", "-f", "-", input=bad, check=False)
    assert err.returncode == 1 and 'unknown field "bogus"' in err.stderr
    kubectl("delete", "-f", "-", input=LIST)
    doc = openapi_pb.Document.FromString(kubectl.raw("/swagger-2.0.0.pb-v1"))
    assert doc.swagger == "2.0" and doc.info.title == "Kubernetes"
