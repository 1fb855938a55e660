"""The real Helm 4 (its Go library through PyPI `helm-python-sdk`) against a real k3py server
with its embedded agent: a chart written here (Deployment of the offline busybox image, Service,
ConfigMap, Secret, ServiceAccount, Role, RoleBinding, a post-install hook Job) is installed with
--wait, listed, read back, upgraded, rolled back with --wait, hit by a server-side apply field
conflict, and uninstalled leaving nothing.

Helm 4 applies a chart's objects with server-side apply, as a field manager named after the
program (here the Python interpreter's). The SDK exposes neither Helm's --server-side switch nor
--force-conflicts: the conflict is made and forced with kubectl's `apply --server-side`, and the
refusal checked is that of Helm's own upgrade.

The tests run in file order on one release (one server for the module)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.harness import wait_for
from tests.integration.agents import IMAGE, embedded_node, fetch

helm = pytest.importorskip("helm_python", reason="needs helm-python-sdk (scripts/setup.sh)")

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman")]

NS = "helm-demo"
RELEASE = "demo"
WAIT = 150  # seconds Helm waits for the objects and the hook
OBJECTS = [("configmap", f"{RELEASE}-config"), ("secret", f"{RELEASE}-secret"),
           ("serviceaccount", f"{RELEASE}-sa"), ("role", f"{RELEASE}-reader"),
           ("rolebinding", f"{RELEASE}-reader"), ("service", f"{RELEASE}-web"),
           ("deployment", f"{RELEASE}-web")]

CHART = {
    "Chart.yaml": """\
apiVersion: v2
name: demo
version: 0.1.0
appVersion: "1.0"
""",
    "values.yaml": f"""\
replicas: 1
message: hello
image: {IMAGE}
""",
    "templates/configmap.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  message: {{ .Values.message | quote }}
""",
    "templates/secret.yaml": """\
apiVersion: v1
kind: Secret
metadata:
  name: {{ .Release.Name }}-secret
type: Opaque
stringData:
  token: {{ printf "%s-token" .Values.message | quote }}
""",
    "templates/rbac.yaml": """\
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .Release.Name }}-sa
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ .Release.Name }}-reader
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ .Release.Name }}-reader
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ .Release.Name }}-reader
subjects:
- kind: ServiceAccount
  name: {{ .Release.Name }}-sa
  namespace: {{ .Release.Namespace }}
""",
    "templates/service.yaml": """\
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}-web
spec:
  selector:
    app: {{ .Release.Name }}-web
  ports:
  - port: 80
    targetPort: 8080
""",
    "templates/deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels:
      app: {{ .Release.Name }}-web
  template:
    metadata:
      labels:
        app: {{ .Release.Name }}-web
      annotations:
        checksum/config: {{ .Values.message | sha256sum }}
    spec:
      serviceAccountName: {{ .Release.Name }}-sa
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: {{ .Values.image }}
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "mkdir -p /www && echo \\"$MESSAGE\\" > /www/index.html && exec httpd -f -p 8080 -h /www"]
        env:
        - name: MESSAGE
          valueFrom:
            configMapKeyRef:
              name: {{ .Release.Name }}-config
              key: message
        - name: TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ .Release.Name }}-secret
              key: token
        readinessProbe:
          tcpSocket:
            port: 8080
          periodSeconds: 1
""",
    "templates/hook-job.yaml": """\
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-post-install
  annotations:
    "helm.sh/hook": post-install
    "helm.sh/hook-delete-policy": before-hook-creation,hook-succeeded
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: hook
        image: {{ .Values.image }}
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "echo post-install of {{ .Release.Name }}"]
""",
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with embedded_node(tmp_path_factory.mktemp("helm"), "helm", timeout=30) as s:
        s.kubectl("create", "namespace", NS)
        yield s


@pytest.fixture(scope="module")
def chart(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chart") / "demo"
    for name, text in CHART.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture(scope="module")
def cfg(srv):
    with helm.Config(kubeconfig_path=srv.kubeconfig, namespace=NS) as c:
        yield c


def _get(srv, *what: str) -> dict:
    return srv.kubectl_json("-n", NS, "get", *what)


def _ready_replicas(srv) -> int:
    return _get(srv, "deploy", f"{RELEASE}-web").get("status", {}).get("readyReplicas", 0)


def _served(srv) -> list[str]:
    """What each live (not terminating) pod of the Deployment serves, if all are Ready."""
    pods = [p for p in _get(srv, "pods", "-l", f"app={RELEASE}-web")["items"]
            if not p["metadata"].get("deletionTimestamp")]
    ready = [c["status"] for p in pods for c in p["status"].get("conditions", [])
             if c["type"] == "Ready"]
    assert ready == ["True"] * len(pods), [p["status"] for p in pods]
    return [fetch(f"http://{p['status']['podIP']}:8080/").strip() for p in pods]


def test_install_waits_for_objects_and_hook(srv, chart, cfg):
    rel = cfg.install(chart, RELEASE, wait="watcher", timeout=WAIT)
    assert (rel["revision"], rel["status"]) == (1, "deployed"), rel
    # --wait returned: the Deployment is available, its pod serves the ConfigMap's message
    assert _ready_replicas(srv) == 1
    assert _served(srv) == ["hello"]
    for kind, name in OBJECTS:
        _get(srv, kind, name)
    hooks = cfg.get_all(RELEASE)["hooks"]
    assert [(h["name"], h["last_run"]["phase"]) for h in hooks] == \
        [(f"{RELEASE}-post-install", "Succeeded")], hooks
    # hook-succeeded: Helm deleted the Job once it completed
    out = srv.kubectl("-n", NS, "get", "job", f"{RELEASE}-post-install", check=False)
    assert "NotFound" in out.stderr


def test_list_status_values_manifest(cfg):
    [listed] = cfg.list()
    assert (listed["name"], listed["namespace"], listed["revision"], listed["status"]) == \
        (RELEASE, NS, 1, "deployed")
    status = cfg.status(RELEASE)
    assert status["status"] == "deployed" and status["chart_version"] == "0.1.0"
    assert cfg.get_values(RELEASE) is None  # nothing user-supplied
    assert cfg.get_values(RELEASE, all_values=True) == {"replicas": 1, "message": "hello",
                                                        "image": IMAGE}
    manifest = status["manifest"]
    for source in ("configmap", "secret", "rbac", "service", "deployment"):
        assert f"# Source: demo/templates/{source}.yaml" in manifest
    assert "hook-job" not in manifest  # hooks are kept apart from the release's objects
    assert cfg.get_metadata(RELEASE)["applyMethod"] == "ssa"  # Helm 4's server-side apply


def test_upgrade_and_history(srv, chart, cfg):
    rel = cfg.upgrade(chart, RELEASE, {"replicas": 2, "message": "world"}, wait="watcher",
                      timeout=WAIT)
    assert (rel["revision"], rel["status"]) == (2, "deployed"), rel
    assert _ready_replicas(srv) == 2
    assert _get(srv, "configmap", f"{RELEASE}-config")["data"] == {"message": "world"}
    assert _served(srv) == ["world", "world"]  # the config's checksum rolled the pods
    assert cfg.get_values(RELEASE) == {"replicas": 2, "message": "world"}
    assert [(h["revision"], h["status"]) for h in cfg.history(RELEASE)] == \
        [(1, "superseded"), (2, "deployed")]


def test_rollback_waits_for_the_old_revision(srv, cfg):
    cfg.rollback(RELEASE, version=1, wait="watcher", timeout=WAIT)
    # --wait returned: one replica again, a new pod of revision 1's template, and it is ready
    deploy = _get(srv, "deploy", f"{RELEASE}-web")
    assert deploy["spec"]["replicas"] == 1 and deploy["status"].get("readyReplicas") == 1, deploy
    assert _get(srv, "configmap", f"{RELEASE}-config")["data"] == {"message": "hello"}
    assert _served(srv) == ["hello"]
    assert [(h["revision"], h["status"]) for h in cfg.history(RELEASE)] == \
        [(1, "superseded"), (2, "superseded"), (3, "deployed")]
    assert cfg.status(RELEASE)["revision"] == 3


def test_server_side_apply_conflict_refused_then_forced(srv, chart, cfg):
    helm_manager = _apply_manager(srv)
    mine = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": f"{RELEASE}-config", "namespace": NS},
                       "data": {"message": "mine"}})
    apply = ("apply", "--server-side", "--field-manager=intruder", "-f", "-")
    out = srv.kubectl(*apply, input=mine, check=False)
    assert out.returncode != 0 and "conflict" in out.stderr, out.stderr
    assert f'conflict with "{helm_manager}"' in out.stderr and ".data.message" in out.stderr
    srv.kubectl(*apply, "--force-conflicts", input=mine)
    assert _get(srv, "configmap", f"{RELEASE}-config")["data"] == {"message": "mine"}
    # Helm's own apply (no --force-conflicts) now meets the intruder's field and is refused
    with pytest.raises(helm.HelmError) as e:
        cfg.upgrade(chart, RELEASE, {"message": "again"}, timeout=WAIT)
    assert "conflict" in str(e.value) and "intruder" in str(e.value), e.value
    assert _get(srv, "configmap", f"{RELEASE}-config")["data"] == {"message": "mine"}
    # Helm's manager takes the field back by force (the CLI's `helm upgrade --force-conflicts`,
    # which the SDK does not expose): the intruder loses it, and Helm's upgrade goes through
    again = mine.replace('"mine"', '"again"')
    srv.kubectl("apply", "--server-side", f"--field-manager={helm_manager}",
                "--force-conflicts", "-f", "-", input=again)
    owners = {m["manager"]: m["fieldsV1"]
              for m in _managed_fields(srv, "configmap", f"{RELEASE}-config")}
    assert "f:message" in owners[helm_manager]["f:data"]
    assert "f:message" not in owners.get("intruder", {}).get("f:data", {}), owners
    # with a second replica, waited for by Helm's other waiter (--wait=legacy, Helm 3's, which
    # reads the ReplicaSets and pods). No rollout: the failed upgrade above had already applied
    # the Deployment with this message's checksum (Helm applies every object, then reports)
    rel = cfg.upgrade(chart, RELEASE, {"message": "again", "replicas": 2}, wait="legacy",
                      timeout=WAIT)
    assert rel["status"] == "deployed", rel
    assert _get(srv, "configmap", f"{RELEASE}-config")["data"] == {"message": "again"}
    assert len(_served(srv)) == 2


def test_uninstall_leaves_nothing(srv, cfg):
    cfg.uninstall(RELEASE, wait="watcher", timeout=WAIT)
    assert cfg.list(all_states=True) == []
    for kind, name in OBJECTS:
        out = srv.kubectl("-n", NS, "get", kind, name, check=False)
        assert "NotFound" in out.stderr, (kind, name, out.stdout)
    # the release records (Secrets owned by Helm) and the Deployment's pods are gone too
    assert not _get(srv, "secrets", "-l", "owner=helm")["items"]
    wait_for(lambda: not _get(srv, "pods")["items"], 60, 0.5, "the release's pods gone")
    assert not _get(srv, "replicasets")["items"]


def _managed_fields(srv, kind: str, name: str) -> list[dict]:
    return _get(srv, kind, name, "--show-managed-fields")["metadata"].get("managedFields", [])


def _apply_manager(srv) -> str:
    """The field manager Helm applied the ConfigMap with (Helm names it after the program)."""
    [entry] = [m for m in _managed_fields(srv, "configmap", f"{RELEASE}-config")
               if m["operation"] == "Apply"]
    return entry["manager"]
