"""The scheduler through kubectl against a real server with API-created nodes: nodeSelector,
taints and tolerations, matchFields, resource fit, FailedScheduling text and later binding."""

from __future__ import annotations

import json

import pytest

from tests.harness import wait_for

pytestmark = pytest.mark.integration

NODES = """
apiVersion: v1
kind: Node
metadata: {name: n-gpu, labels: {gpu: "true", kubernetes.io/hostname: n-gpu}}
---
apiVersion: v1
kind: Node
metadata: {name: n-infra, labels: {kubernetes.io/hostname: n-infra}}
spec:
  taints: [{key: dedicated, value: infra, effect: NoSchedule}]
---
apiVersion: v1
kind: Node
metadata: {name: n-plain, labels: {kubernetes.io/hostname: n-plain}}
"""
ALLOCATABLE = json.dumps({"status": {
    "capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"},
    "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}})


def pod_yaml(name: str, extra: str = "", cpu: str = "100m") -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  containers:
  - name: c
    image: busybox
    resources: {{requests: {{cpu: "{cpu}", memory: 64Mi}}}}
{extra}
"""


def node_of(server, name: str) -> str:
    return server.kubectl_json("get", "pod", name)["spec"].get("nodeName") or ""


@pytest.fixture(scope="module")
def nodes(server):
    server.kubectl("apply", "-f", "-", input=NODES)
    for n in ("n-gpu", "n-infra", "n-plain"):
        server.kubectl("patch", "node", n, "--subresource=status", "--type=merge",
                       "-p", ALLOCATABLE)
    return server


def test_node_selector_lands_on_labelled_node(nodes):
    srv = nodes
    srv.kubectl("apply", "-f", "-", input=pod_yaml("p-gpu", "  nodeSelector: {gpu: \"true\"}"))
    assert wait_for(lambda: node_of(srv, "p-gpu"), 30, what="p-gpu bound") == "n-gpu"

    def scheduled_event():
        out = srv.kubectl("get", "events", "--field-selector",
                          "involvedObject.name=p-gpu,reason=Scheduled", "-o", "json").stdout
        return [e["message"] for e in json.loads(out)["items"]]
    assert "Successfully assigned default/p-gpu to n-gpu" in \
        wait_for(scheduled_event, 30, what="Scheduled event")
    cond = [c for c in srv.kubectl_json("get", "pod", "p-gpu")["status"]["conditions"]
            if c["type"] == "PodScheduled"]
    assert cond and cond[0]["status"] == "True"


def test_toleration_and_match_fields(nodes):
    srv = nodes
    extra = """  tolerations: [{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}]
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchFields: [{key: metadata.name, operator: In, values: [n-infra]}]"""
    srv.kubectl("apply", "-f", "-", input=pod_yaml("p-infra", extra))
    assert wait_for(lambda: node_of(srv, "p-infra"), 30, what="p-infra bound") == "n-infra"


def test_untolerated_taint_is_avoided(nodes):
    srv = nodes
    names = [f"p-any-{i}" for i in range(6)]
    srv.kubectl("apply", "-f", "-", input="---".join(pod_yaml(n) for n in names))
    for n in names:
        placed = wait_for(lambda n=n: node_of(srv, n), 30, what=f"{n} bound")
        assert placed in ("n-gpu", "n-plain")


def test_failed_scheduling_message_then_binds_when_a_node_fits(nodes):
    srv = nodes
    srv.kubectl("apply", "-f", "-", input=pod_yaml("p-big", cpu="3"))
    want = ("0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: infra}, "
            "2 Insufficient cpu. preemption: 0/3 nodes are available: "
            "1 Preemption is not helpful for scheduling, "
            "2 No preemption victims found for incoming pod.")

    def failed():
        out = srv.kubectl("get", "events", "--field-selector",
                          "involvedObject.name=p-big,reason=FailedScheduling",
                          "-o", "json").stdout
        return [e for e in json.loads(out)["items"] if e["message"] == want]
    events = wait_for(failed, 30, what="FailedScheduling event")
    assert events[0]["type"] == "Warning"
    pod = srv.kubectl_json("get", "pod", "p-big")
    cond = [c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled"][0]
    assert (cond["status"], cond["reason"], cond["message"]) == ("False", "Unschedulable", want)
    assert not pod["spec"].get("nodeName")

    srv.kubectl("apply", "-f", "-", input="""
apiVersion: v1
kind: Node
metadata: {name: n-big}
""")
    srv.kubectl("patch", "node", "n-big", "--subresource=status", "--type=merge", "-p",
                json.dumps({"status": {"allocatable": {"cpu": "8", "memory": "16Gi",
                                                       "pods": "110"}}}))
    assert wait_for(lambda: node_of(srv, "p-big"), 60, what="p-big bound") == "n-big"


def test_unschedulable_node_is_skipped(nodes):
    srv = nodes
    srv.kubectl("cordon", "n-plain")
    try:
        names = [f"p-cordon-{i}" for i in range(4)]
        srv.kubectl("apply", "-f", "-", input="---".join(pod_yaml(n) for n in names))
        for n in names:
            assert wait_for(lambda n=n: node_of(srv, n), 30, what=f"{n} bound") != "n-plain"
    finally:
        srv.kubectl("uncordon", "n-plain")
