"""The dashboard's slim rows: each view's few fields from a whole object (a pod's phase,
node, restarts and containers; a node's readiness; a Device's twins with desired and reported;
a DeviceModel's properties; a workload's counts: a Job's completions and status, a
CronJob's schedule), and name/namespace/uid/age for any other resource."""

from __future__ import annotations

import pytest

from k3py.webui.rows import project

pytestmark = pytest.mark.unit

_MD = {"name": "a", "namespace": "default", "uid": "u1", "creationTimestamp": "2026-01-01T00:00:00Z",
       "labels": {"x": "y"}, "managedFields": [{"manager": "kubectl"}]}


def test_a_pod_row_keeps_only_what_the_view_shows():
    pod = {"metadata": {**_MD, "deletionTimestamp": "2026-01-01T00:01:00Z"},
           "spec": {"nodeName": "n1", "containers": [{"name": "c1", "image": "i"},
                                                     {"name": "c2", "image": "i"}]},
           "status": {"phase": "Running", "containerStatuses": [{"restartCount": 2},
                                                                {"restartCount": 1}]}}
    assert project("", "pods", pod) == {
        "uid": "u1", "name": "a", "namespace": "default", "created": "2026-01-01T00:00:00Z",
        "phase": "Terminating", "node": "n1", "restarts": 3, "containers": ["c1", "c2"]}


def test_a_node_row_says_ready_only_for_a_true_ready_condition():
    node = {"metadata": {"name": "n1", "uid": "u2"}, "status": {
        "conditions": [{"type": "Ready", "status": "Unknown"}],
        "nodeInfo": {"architecture": "arm64", "kubeletVersion": "v1.31.0-k3py"}}}
    row = project("", "nodes", node)
    assert row["ready"] is False and row["arch"] == "arm64" and "namespace" not in row
    node["status"]["conditions"][0]["status"] = "True"
    assert project("", "nodes", node)["ready"] is True


def test_device_rows_carry_desired_and_reported_twins():
    device = {"metadata": _MD, "spec": {"deviceModelRef": {"name": "counter-model"}},
              "status": {"twins": [
                  {"propertyName": "status", "desired": {"value": "ON"},
                   "reported": {"value": "7", "metadata": {"type": "string"}}},
                  {"propertyName": "temp"}]}}
    row = project("devices.kubeedge.io", "devices", device)
    assert row["model"] == "counter-model" and row["state"] == "unknown"  # no report yet
    assert row["twins"] == [{"property": "status", "desired": "ON", "reported": "7"},
                            {"property": "temp", "desired": None, "reported": None}]


def test_a_device_model_row_lists_its_properties():
    model = {"metadata": _MD, "spec": {"properties": [
        {"name": "status", "type": {"string": {"accessMode": "ReadWrite"}}},
        {"name": "temp", "type": "FLOAT", "accessMode": "ReadOnly"}]}}  # v1alpha1/2, v1beta1
    assert project("devices.kubeedge.io", "devicemodels", model)["properties"] == [
        {"name": "status", "type": "string", "accessMode": "ReadWrite"},
        {"name": "temp", "type": "FLOAT", "accessMode": "ReadOnly"}]


def test_any_other_resource_gets_name_namespace_uid_and_age():
    assert project("", "configmaps", {"metadata": _MD, "data": {"k": "v"}}) == {
        "uid": "u1", "name": "a", "namespace": "default", "created": "2026-01-01T00:00:00Z"}


def test_an_event_row_names_its_object_and_when_it_was_last_seen():
    event = {"metadata": _MD, "type": "Warning", "reason": "BackOff", "message": "restarting",
             "involvedObject": {"kind": "Pod", "name": "web-1", "uid": "p1"}, "count": 4,
             "lastTimestamp": "2026-01-01T00:05:00Z"}
    row = project("", "events", event)
    assert row["object"] == {"kind": "Pod", "name": "web-1", "uid": "p1"}
    assert (row["type"], row["reason"], row["count"], row["last"]) == (
        "Warning", "BackOff", 4, "2026-01-01T00:05:00Z")
    new_style = {"metadata": _MD, "type": "Normal", "note": "n", "eventTime": "2026-01-02T00:00:00Z",
                 "regarding": {"kind": "Node", "name": "n1"}}
    row = project("", "events", new_style)
    assert (row["message"], row["object"]["name"], row["count"], row["last"]) == (
        "n", "n1", 1, "2026-01-02T00:00:00Z")


def test_workload_rows_count_desired_ready_and_carry_the_selector():
    template = {"spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}
    deployment = {"metadata": _MD, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "w"}},
                                            "template": template},
                  "status": {"readyReplicas": 2, "updatedReplicas": 3}}
    row = project("apps", "deployments", deployment)
    assert (row["desired"], row["ready"], row["upToDate"]) == (3, 2, 3)
    assert row["images"] == ["nginx:1"] and row["selector"] == {"app": "w"}
    assert "spec" not in row
    daemonset = {"metadata": _MD, "spec": {"template": template},
                 "status": {"desiredNumberScheduled": 2, "numberReady": 1}}
    row = project("apps", "daemonsets", daemonset)
    assert (row["desired"], row["ready"], row["upToDate"]) == (2, 1, 0)


def test_a_replicaset_row_has_desired_current_ready_and_its_deployment():
    rs = {"metadata": {**_MD, "ownerReferences": [
              {"kind": "Deployment", "name": "web", "controller": True}]},
          "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "w"}}},
          "status": {"replicas": 2, "readyReplicas": 1}}
    row = project("apps", "replicasets", rs)
    assert (row["desired"], row["current"], row["ready"], row["owner"]) == (3, 2, 1, "web")


def test_a_job_row_counts_completions_and_says_its_status():
    job = {"metadata": _MD, "spec": {"completions": 3, "selector": {"matchLabels": {
               "batch.kubernetes.io/controller-uid": "u1"}}},
           "status": {"succeeded": 1, "active": 2, "startTime": "2026-01-01T00:00:00Z"}}
    row = project("batch", "jobs", job)
    assert (row["desired"], row["ready"], row["active"], row["status"], row["end"]) == (
        3, 1, 2, "Running", "")
    assert row["selector"] == {"batch.kubernetes.io/controller-uid": "u1"}
    del job["spec"]["completions"]
    job["status"]["conditions"] = [{"type": "Failed", "status": "False"},
                                   {"type": "Complete", "status": "True"}]
    row = project("batch", "jobs", job)
    assert (row["desired"], row["status"]) == (1, "Complete")
    assert project("batch", "jobs", {"metadata": _MD, "spec": {"suspend": True}})["status"] == \
        "Suspended"


def test_a_cronjob_row_has_schedule_suspend_active_and_last_schedule():
    cron = {"metadata": _MD, "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {
                "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "a-1"}], "lastScheduleTime": "2026-01-01T00:05:00Z"}}
    row = project("batch", "cronjobs", cron)
    assert (row["schedule"], row["suspend"], row["active"], row["lastSchedule"], row["images"]) == (
        "*/5 * * * *", False, 1, "2026-01-01T00:05:00Z", ["busybox"])
