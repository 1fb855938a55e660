"""Upstream defaults and strategies (what `kubectl get -o yaml` shows after a create)."""

import base64

import pytest

from k3py.api import kinds
from k3py.api.resources import builtin_registry

pytestmark = pytest.mark.unit
REG = builtin_registry()


def _create(group: str, plural: str, obj: dict) -> dict:
    res = REG.find(group, plural)
    obj.setdefault("metadata", {}).setdefault("name", "x")
    kinds.prepare_for_create(res, obj)
    kinds.default(res, obj)
    assert kinds.validate(res, obj) == []
    return obj


def _tmpl(labels: dict, image: str = "nginx:1.25") -> dict:
    return {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "image": image}]}}


def test_pod_defaults():
    pod = _create("", "pods", {"spec": {"containers": [
        {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}]},
        {"name": "b", "image": "nginx:1.25",
         "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}})
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Always" and spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler"
    assert spec["terminationGracePeriodSeconds"] == 30 and spec["securityContext"] == {}
    assert spec["serviceAccountName"] == spec["serviceAccount"] == "default"
    assert spec["enableServiceLinks"] is True and spec["priority"] == 0
    assert spec["preemptionPolicy"] == "PreemptLowerPriority"
    a, b = spec["containers"]
    assert a["imagePullPolicy"] == "Always" and b["imagePullPolicy"] == "IfNotPresent"
    assert a["terminationMessagePath"] == "/dev/termination-log"
    assert a["terminationMessagePolicy"] == "File"
    assert a["ports"][0]["protocol"] == "TCP"
    assert b["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
            "effect": "NoExecute", "tolerationSeconds": 300} in spec["tolerations"]
    assert len(spec["tolerations"]) == 2
    assert pod["status"] == {"phase": "Pending", "qosClass": "Burstable"}
    assert pod["metadata"]["generation"] == 1


def test_qos_classes_and_digest_pull_policy():
    g = _create("", "pods", {"spec": {"containers": [
        {"name": "a", "image": "nginx@sha256:" + "a" * 64,
         "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}]}})
    assert g["status"]["qosClass"] == "Guaranteed"
    assert g["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    be = _create("", "pods", {"spec": {"containers": [{"name": "a", "image": "r:5000/x"}]}})
    assert be["status"]["qosClass"] == "BestEffort"
    assert be["spec"]["containers"][0]["imagePullPolicy"] == "Always"


def test_deployment_defaults():
    d = _create("apps", "deployments", {"spec": {
        "selector": {"matchLabels": {"app": "w"}}, "template": _tmpl({"app": "w"}),
        "status": {"replicas": 9}}})
    spec = d["spec"]
    assert spec["replicas"] == 1 and spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    assert "serviceAccountName" not in spec["template"]["spec"]  # admission is for pods only
    assert d["metadata"]["generation"] == 1


def test_daemonset_and_statefulset_defaults():
    ds = _create("apps", "daemonsets", {"spec": {
        "selector": {"matchLabels": {"a": "b"}}, "template": _tmpl({"a": "b"})}})
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {
        "maxUnavailable": 1, "maxSurge": 0}}
    assert ds["spec"]["revisionHistoryLimit"] == 10
    sts = _create("apps", "statefulsets", {"spec": {
        "serviceName": "s", "selector": {"matchLabels": {"a": "b"}},
        "template": _tmpl({"a": "b"})}})
    spec = sts["spec"]
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain",
                                                            "whenScaled": "Retain"}


def test_job_defaults_generate_selector_from_uid():
    job = {"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]}}}}
    _create("batch", "jobs", job)
    spec = job["spec"]
    assert (spec["completions"], spec["parallelism"], spec["backoffLimit"]) == (1, 1, 6)
    assert spec["completionMode"] == "NonIndexed" and spec["suspend"] is False
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}}
    expected = {"batch.kubernetes.io/controller-uid": "u-1", "batch.kubernetes.io/job-name": "pi",
                "controller-uid": "u-1", "job-name": "pi"}
    assert spec["template"]["metadata"]["labels"] == expected
    assert job["metadata"]["labels"] == expected


def test_cronjob_defaults():
    cj = _create("batch", "cronjobs", {"spec": {"schedule": "*/1 * * * *", "jobTemplate": {
        "spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                                       "containers": [{"name": "c", "image": "busybox"}]}}}}}})
    spec = cj["spec"]
    assert (spec["concurrencyPolicy"], spec["suspend"]) == ("Allow", False)
    assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 1)


def test_service_defaults():
    svc = _create("", "services", {"spec": {"selector": {"app": "w"},
                                            "ports": [{"port": 80}]}})
    spec = svc["spec"]
    assert spec["type"] == "ClusterIP" and spec["sessionAffinity"] == "None"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert "ipFamilies" not in spec  # the server's ServiceAllocator sets them
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert svc["status"] == {"loadBalancer": {}}
    np = _create("", "services", {"spec": {"type": "NodePort", "ports": [{"port": 80}]}})
    assert np["spec"]["externalTrafficPolicy"] == "Cluster"


def test_secret_namespace_pvc_defaults():
    s = _create("", "secrets", {"stringData": {"pw": "hunter2"}, "data": {"a": "Yg=="}})
    assert s["type"] == "Opaque" and "stringData" not in s
    assert base64.b64decode(s["data"]["pw"]) == b"hunter2" and s["data"]["a"] == "Yg=="
    ns = _create("", "namespaces", {"metadata": {"name": "team-a"}})
    assert ns["spec"] == {"finalizers": ["kubernetes"]} and ns["status"] == {"phase": "Active"}
    assert ns["metadata"]["labels"] == {"kubernetes.io/metadata.name": "team-a"}
    assert "generation" not in ns["metadata"]
    pvc = _create("", "persistentvolumeclaims", {"spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    assert pvc["spec"]["volumeMode"] == "Filesystem" and pvc["status"] == {"phase": "Pending"}


def test_update_keeps_status_and_bumps_generation_on_spec_change():
    res = REG.find("apps", "deployments")
    old = _create("apps", "deployments", {"spec": {
        "selector": {"matchLabels": {"app": "w"}}, "template": _tmpl({"app": "w"})}})
    old["status"] = {"replicas": 1}
    new = {**old, "metadata": dict(old["metadata"], labels={"x": "y"}), "status": {}}
    out = kinds.prepare_for_update(res, new, old, "")
    assert out["status"] == {"replicas": 1} and out["metadata"]["generation"] == 1
    new2 = {**old, "spec": dict(old["spec"], replicas=3)}
    assert kinds.prepare_for_update(res, new2, old, "")["metadata"]["generation"] == 2
    st = kinds.prepare_for_update(res, {**old, "spec": {}, "status": {"replicas": 3},
                                        "metadata": dict(old["metadata"], labels={"z": "1"})},
                                  old, "status")
    assert st["spec"] == old["spec"] and st["status"] == {"replicas": 3}
    assert "labels" not in st["metadata"]  # deployments' status writes keep the labels


def test_pod_status_write_keeps_the_stored_spec_unvalidated():
    """A status write takes the stored spec itself (not a copy) and, as upstream's
    ValidatePodStatusUpdate, validates no spec: one stored before a stricter rule still takes
    its status; the stored metadata is not changed by what the write brings."""
    res = REG.find("", "pods")
    old = {"metadata": {"name": "p", "labels": {"a": "b"}},
           "spec": {"containers": [{"name": "Not_A_Name", "image": "x"}]}}
    write = {"metadata": {"name": "p", "labels": {"a": "c"}}, "spec": {"containers": []},
             "status": {"phase": "Running"}}
    new = kinds.prepare_for_update(res, write, old, "status")
    assert new["spec"] is old["spec"] and new["status"] == {"phase": "Running"}
    assert new["metadata"]["labels"] == {"a": "c"} and old["metadata"]["labels"] == {"a": "b"}
    assert kinds.validate(res, new, old) == []
    assert kinds.validate(res, {**new, "spec": dict(old["spec"])}, old)  # a main write is


def test_custom_resource_status_write_changes_only_status():
    from k3py.api.resources import Resource
    res = Resource(group="x.io", version="v1", kind="Foo", plural="foos", crd=True,
                   subresources=("status",))
    old = {"metadata": {"name": "f", "generation": 1, "labels": {"a": "b"}}, "spec": {"n": 1}}
    new = {"metadata": {"name": "f", "labels": {}}, "spec": {"n": 2}, "status": {"ok": True}}
    out = kinds.prepare_for_update(res, new, old, "status")
    assert out == {"metadata": old["metadata"], "spec": {"n": 1}, "status": {"ok": True}}
