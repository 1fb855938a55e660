"""Workload controllers through kubectl against a real server, the test acting as kubelet.

Deployment create/scale/rollout status/restart/undo, and a Job completing."""

from __future__ import annotations

import json

import pytest

from tests.harness import wait_for

pytestmark = pytest.mark.integration

READY = json.dumps({"status": {"phase": "Running", "podIP": "10.42.0.5",
                               "conditions": [{"type": "Ready", "status": "True"}]}})
SUCCEEDED = json.dumps({"status": {"phase": "Succeeded"}})

DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: "nginx:1"}]}
"""

JOB = """
apiVersion: batch/v1
kind: Job
metadata: {name: pi, namespace: default}
spec:
  completions: 2
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
"""


def pods(server, selector: str) -> list[dict]:
    return server.kubectl_json("get", "pods", "-l", selector)["items"]


def mark(server, selector: str, body: str = READY) -> int:
    """Act as the kubelet: report the pods' `body` status and finish the deletion (grace 0)
    of terminating pods, which a pod bound to a node waits for."""
    n = 0
    for p in pods(server, selector):
        if p["metadata"].get("deletionTimestamp"):
            if (p.get("spec") or {}).get("nodeName"):
                server.kubectl("delete", "pod", p["metadata"]["name"], "--force",
                               "--grace-period=0", "--wait=false", check=False)
            continue
        phase = (p.get("status") or {}).get("phase")
        if body == READY and phase == "Running":
            continue
        server.kubectl("patch", "pod", p["metadata"]["name"], "--subresource=status",
                       "--type=merge", "-p", body)
        n += 1
    return n


def rollout(server, name: str = "web", timeout: float = 60.0) -> None:
    """Act as the kubelet until `kubectl rollout status` reports success."""
    def done() -> bool:
        mark(server, "app=web")
        out = server.kubectl("rollout", "status", f"deploy/{name}", "--timeout=2s",
                             check=False, timeout=20)
        return out.returncode == 0 and "successfully rolled out" in out.stdout
    wait_for(done, timeout=timeout, interval=0.5, what=f"rollout of {name}")


def replicasets(server) -> list[dict]:
    return server.kubectl_json("get", "rs", "-l", "app=web")["items"]


def test_deployment_lifecycle(server) -> None:
    server.kubectl("apply", "-f", "-", input=DEPLOY)
    wait_for(lambda: len(pods(server, "app=web")) == 3, what="3 pods")
    rs = replicasets(server)
    assert len(rs) == 1
    assert rs[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert rs[0]["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    rollout(server)
    d = server.kubectl_json("get", "deploy", "web")
    conds = {c["type"]: c for c in d["status"]["conditions"]}
    assert conds["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conds["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert d["status"]["availableReplicas"] == 3

    server.kubectl("scale", "deploy/web", "--replicas=5")
    wait_for(lambda: len(pods(server, "app=web")) == 5, what="scaled to 5")
    rollout(server)

    server.kubectl("set", "image", "deploy/web", "c=nginx:2")
    rollout(server)
    assert len(replicasets(server)) == 2
    images = {p["spec"]["containers"][0]["image"] for p in pods(server, "app=web")
              if not p["metadata"].get("deletionTimestamp")}
    assert images == {"nginx:2"}

    server.kubectl("rollout", "restart", "deploy/web")
    rollout(server)
    assert len(replicasets(server)) == 3

    server.kubectl("rollout", "undo", "deploy/web", "--to-revision=1")
    rollout(server)
    rs = {r["metadata"]["name"]: r for r in replicasets(server)}
    first = [r for r in rs.values() if r["spec"]["template"]["spec"]["containers"][0]["image"]
             == "nginx:1"]
    assert len(first) == 1 and first[0]["spec"]["replicas"] == 5
    assert first[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "4"
    events = server.kubectl("get", "events", "--field-selector",
                            "involvedObject.name=web").stdout
    assert "ScalingReplicaSet" in events


def test_job_completes(server) -> None:
    server.kubectl("apply", "-f", "-", input=JOB)

    def succeeded() -> bool:
        mark(server, "job-name=pi", SUCCEEDED)
        job = server.kubectl_json("get", "job", "pi")
        return any(c["type"] == "Complete" and c["status"] == "True"
                   for c in (job.get("status") or {}).get("conditions") or [])
    wait_for(succeeded, timeout=60, interval=0.5, what="job complete")
    job = server.kubectl_json("get", "job", "pi")
    assert job["status"]["succeeded"] == 2
    assert job["status"]["completionTime"]
    server.kubectl("wait", "--for=condition=complete", "job/pi", "--timeout=10s")


NODES = """
apiVersion: v1
kind: Node
metadata: {name: wn1}
status: {conditions: [{type: Ready, status: "True"}], allocatable: {cpu: "4", pods: "110"}}
---
apiVersion: v1
kind: Node
metadata: {name: wn2}
status: {conditions: [{type: Ready, status: "True"}], allocatable: {cpu: "4", pods: "110"}}
"""

DAEMONSET = """
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: default}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: c, image: "busybox:1"}]}
"""

STATEFULSET = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: default}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: c, image: "pg:1"}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"""


def roll(server, kind: str, selector: str, timeout: float = 60.0) -> None:
    def done() -> bool:
        mark(server, selector)
        out = server.kubectl("rollout", "status", kind, "--timeout=2s", check=False,
                             timeout=20)
        return out.returncode == 0
    wait_for(done, timeout=timeout, interval=0.5, what=f"rollout of {kind}")


def test_daemonset_and_statefulset_rollouts(server) -> None:
    server.kubectl("apply", "-f", "-", input=NODES)
    server.kubectl("apply", "-f", "-", input=DAEMONSET)
    roll(server, "ds/agent", "app=agent")
    nodes = {p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
             ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
             for p in pods(server, "app=agent")}
    assert {"wn1", "wn2"} <= nodes
    server.kubectl("set", "image", "ds/agent", "c=busybox:2")
    roll(server, "ds/agent", "app=agent")
    assert {p["spec"]["containers"][0]["image"] for p in pods(server, "app=agent")} == \
        {"busybox:2"}
    history = server.kubectl("rollout", "history", "ds/agent").stdout
    assert "1 " in history and "2 " in history

    server.kubectl("apply", "-f", "-", input=STATEFULSET)
    roll(server, "sts/db", "app=db")
    names = sorted(p["metadata"]["name"] for p in pods(server, "app=db"))
    assert names == ["db-0", "db-1"]
    pvcs = server.kubectl_json("get", "pvc")["items"]
    assert {"data-db-0", "data-db-1"} <= {p["metadata"]["name"] for p in pvcs}
    server.kubectl("set", "image", "sts/db", "c=pg:2")
    roll(server, "sts/db", "app=db")
    sts = server.kubectl_json("get", "sts", "db")
    assert sts["status"]["currentRevision"] == sts["status"]["updateRevision"]
    server.kubectl("rollout", "undo", "sts/db")
    roll(server, "sts/db", "app=db")

    def images() -> set[str]:
        return {p["spec"]["containers"][0]["image"] for p in pods(server, "app=db")
                if not p["metadata"].get("deletionTimestamp")}
    wait_for(lambda: images() == {"pg:1"}, what="statefulset undo")
