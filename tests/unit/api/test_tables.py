"""Server-side tables: upstream's columns and cells (what `kubectl get` prints)."""

import datetime as dt

import pytest

from k3py.api import kinds
from k3py.api.duration import human_duration
from k3py.api.resources import Resource, builtin_registry

pytestmark = pytest.mark.unit
REG = builtin_registry()
NOW = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)


def ago(seconds: int) -> str:
    return (NOW - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def row(group: str, plural: str, obj: dict) -> list:
    obj.setdefault("metadata", {}).setdefault("name", "x")
    obj["metadata"].setdefault("creationTimestamp", ago(90))
    return kinds.table_row(REG.find(group, plural), obj, NOW)


@pytest.mark.parametrize("seconds,text", [
    (5, "5s"), (119, "119s"), (182, "3m2s"), (600, "10m"), (3 * 3600, "3h"),
    (4 * 3600 + 5 * 60, "4h5m"), (20 * 3600, "20h"), (51 * 3600, "2d3h"), (30 * 86400, "30d"),
    (800 * 86400, "2y70d"), (3000 * 86400, "8y"), (-1, "0s"), (-5, "<invalid>")])
def test_human_duration(seconds, text):
    assert human_duration(dt.timedelta(seconds=seconds)) == text


def test_pod_columns_and_statuses():
    cols = kinds.table_columns(REG.find("", "pods"))
    assert [c["name"] for c in cols] == ["Name", "Ready", "Status", "Restarts", "Age", "IP",
                                         "Node", "Nominated Node", "Readiness Gates"]
    assert [c["priority"] for c in cols] == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    running = {"spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
               "status": {"phase": "Running", "podIPs": [{"ip": "10.42.0.5"}],
                          "containerStatuses": [
                              {"name": "a", "ready": True, "restartCount": 3,
                               "state": {"running": {}},
                               "lastState": {"terminated": {"finishedAt": ago(300)}}},
                              {"name": "b", "ready": False, "restartCount": 0,
                               "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}
    assert row("", "pods", running) == ["x", "1/2", "CrashLoopBackOff", "3 (5m ago)", "90s",
                                        "10.42.0.5", "n1", "<none>", "<none>"]
    creating = {"spec": {"containers": [{"name": "a"}]}, "status": {
        "phase": "Pending", "containerStatuses": [
            {"name": "a", "state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    assert row("", "pods", creating)[1:4] == ["0/1", "ContainerCreating", "0"]
    done = {"spec": {"containers": [{"name": "a"}]}, "status": {
        "phase": "Succeeded", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]}}
    assert row("", "pods", done)[2] == "Completed"
    init = {"spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": "i", "state": {"running": {}}}]}}
    assert row("", "pods", init)[2] == "Init:0/1"
    gone = {"metadata": {"name": "x", "deletionTimestamp": ago(1)},
            "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running"}}
    assert row("", "pods", gone)[2] == "Terminating"


def test_workload_rows():
    d = {"spec": {"replicas": 3, "selector": {"matchLabels": {"app": "w"}},
                  "template": {"spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
         "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    assert row("apps", "deployments", d) == ["x", "2/3", 3, 2, "90s", "c", "nginx", "app=w"]
    job = {"spec": {"completions": 1, "selector": {"matchLabels": {"u": "1"}},
                    "template": {"spec": {"containers": [{"name": "c", "image": "perl"}]}}},
           "status": {"succeeded": 1, "startTime": ago(60), "completionTime": ago(20),
                      "conditions": [{"type": "Complete", "status": "True"}]}}
    assert row("batch", "jobs", job)[:5] == ["x", "Complete", "1/1", "40s", "90s"]
    cj = {"spec": {"schedule": "*/1 * * * *", "suspend": False}, "status": {}}
    assert row("batch", "cronjobs", cj)[:7] == ["x", "*/1 * * * *", "<none>", "False", 0,
                                                "<none>", "90s"]


def test_service_node_event_rows():
    svc = {"spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.10", "selector": {"a": "b"},
                    "ports": [{"port": 80, "nodePort": 31000, "protocol": "TCP"}]}}
    assert row("", "services", svc) == ["x", "LoadBalancer", "10.43.0.10", "<pending>",
                                        "80:31000/TCP", "90s", "a=b"]
    node = {"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"unschedulable": True},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}],
                       "nodeInfo": {"kubeletVersion": "v1.31.0"}}}
    assert row("", "nodes", node)[:5] == ["n", "NotReady,SchedulingDisabled", "control-plane",
                                          "90s", "v1.31.0"]
    ev = {"involvedObject": {"kind": "Pod", "name": "web"}, "type": "Normal",
          "reason": "Pulled", "message": " done ", "lastTimestamp": ago(5),
          "firstTimestamp": ago(60), "count": 2, "source": {"component": "kubelet"}}
    assert row("", "events", ev) == ["5s", "Normal", "Pulled", "pod/web", "", "kubelet", "done",
                                     "60s", 2, "x"]


def test_custom_resource_printer_columns():
    res = Resource(group="x.io", version="v1", kind="Foo", plural="foos", crd=True, extra={
        "printer_columns": [
            {"name": "Ready", "type": "string",
             "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
            {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]})
    obj = {"metadata": {"name": "f", "creationTimestamp": ago(7200)},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert [c["name"] for c in kinds.table_columns(res)] == ["Name", "Ready", "Size", "Age"]
    assert kinds.table_row(res, obj, NOW) == ["f", "True", None, "120m"]
    plain = Resource(group="x.io", version="v1", kind="Bar", plural="bars", crd=True)
    assert [c["name"] for c in kinds.table_columns(plain)] == ["Name", "Age"]


def test_build_table_include_object():
    res = REG.find("", "configmaps")
    cm = {"kind": "ConfigMap", "metadata": {"name": "c", "creationTimestamp": ago(3)},
          "data": {"a": "1"}}
    t = kinds.build_table(res, [cm], NOW)
    assert t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1"
    assert t["rows"][0]["cells"] == ["c", 1, "3s"]
    assert t["rows"][0]["object"] == {"kind": "PartialObjectMetadata",
                                      "apiVersion": "meta.k8s.io/v1",
                                      "metadata": cm["metadata"]}
    assert t["columnDefinitions"][0]["format"] == "name"
    assert "object" not in kinds.build_table(res, [cm], NOW, "None")["rows"][0]
    assert kinds.build_table(res, [cm], NOW, "Object")["rows"][0]["object"] is cm
    lease = REG.find("coordination.k8s.io", "leases")
    assert [c["name"] for c in kinds.table_columns(lease)] == ["Name", "Holder", "Age"]
    generic = REG.find("", "limitranges")
    assert kinds.table_row(generic, cm, NOW) == ["c", "3s"]
