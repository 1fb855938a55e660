"""The pure kubelet lifecycle rules of k3py/agent/lifecycle.py and k3py/agent/pods/probes.py:
quantities, QoS class, podman limits, Event objects, probe defaults and named ports (restarts
and status: test_pod_restarts.py, test_pod_status.py)."""

from __future__ import annotations

import pytest

from k3py.agent.lifecycle import make_event, parse_cpu, parse_memory, podman_limits, qos_class
from k3py.agent.pods.probes import probe_params, resolve_port

pytestmark = pytest.mark.unit


def _pod(*resources: dict, init: dict | None = None) -> dict:
    spec: dict = {"containers": [{"name": f"c{i}", "resources": r}
                                 for i, r in enumerate(resources)]}
    if init is not None:
        spec["initContainers"] = [{"name": "i", "resources": init}]
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": spec}


def test_quantities():
    assert parse_cpu("500m") == 0.5
    assert parse_cpu("2") == 2.0
    assert parse_cpu(0.25) == 0.25
    assert parse_cpu("lots") is None and parse_cpu(None) is None
    assert parse_memory("64Mi") == 64 * 2**20
    assert parse_memory("1G") == 10**9
    assert parse_memory("1e6") == 10**6
    assert parse_memory(1000) == 1000
    assert parse_memory("12Qi") is None


def test_qos_class():
    both = {"cpu": "1", "memory": "1Gi"}
    assert qos_class(_pod({})) == "BestEffort"
    assert qos_class(_pod({"limits": {"nvidia.com/gpu": "1"}})) == "BestEffort"
    assert qos_class(_pod({"limits": both})) == "Guaranteed"  # requests default to limits
    assert qos_class(_pod({"limits": both, "requests": both})) == "Guaranteed"
    assert qos_class(_pod({"limits": both, "requests": {"cpu": "500m"}})) == "Burstable"
    assert qos_class(_pod({"limits": {"cpu": "1"}})) == "Burstable"
    assert qos_class(_pod({"requests": {"memory": "1Mi"}})) == "Burstable"
    assert qos_class(_pod({"limits": both}, {})) == "Burstable"  # every container counts
    assert qos_class(_pod({"limits": both}, init={"limits": both})) == "Guaranteed"


def test_podman_limits():
    assert podman_limits({"resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}) == \
        {"cpus": "0.5", "memory": 64 * 2**20}
    assert podman_limits({"resources": {"limits": {"cpu": "2"}}}) == {"cpus": "2"}
    assert podman_limits({"resources": {"requests": {"cpu": "2"}}}) == {}


def test_probe_params_and_ports():
    assert probe_params({}) == {"initialDelaySeconds": 0, "periodSeconds": 10,
                                "timeoutSeconds": 1, "successThreshold": 1,
                                "failureThreshold": 3}
    assert probe_params({"periodSeconds": 0, "failureThreshold": "x"})["periodSeconds"] == 1
    c = {"ports": [{"name": "http", "containerPort": 8080}]}
    assert resolve_port("http", c) == 8080
    assert resolve_port(81, c) == 81 and resolve_port("82", c) == 82
    assert resolve_port("nope", c) is None


def test_event_object():
    ev = make_event(_pod({}), name="p.1", reason="BackOff", message="m", type_="Warning",
                    container="c0", init=False, node="n1", count=3, first=0.0, last=60.0)
    assert ev["involvedObject"] == {"kind": "Pod", "apiVersion": "v1", "namespace": "ns",
                                    "name": "p", "uid": "u1",
                                    "fieldPath": "spec.containers{c0}"}
    assert ev["count"] == 3 and ev["source"] == {"component": "kubelet", "host": "n1"}
    assert ev["firstTimestamp"] == "1970-01-01T00:00:00Z"
    assert ev["lastTimestamp"] == "1970-01-01T00:01:00Z"
