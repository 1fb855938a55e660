"""The pod status of k3py/agent/pods/status.py from podman inspects, with no podman: phase,
conditions, pod IP, container and init container statuses, CrashLoopBackOff with lastState,
restart counts and probe verdicts."""

from __future__ import annotations

import pytest

from k3py.agent.pods.restarts import RestartState, plan
from k3py.agent.pods.status import phase_of, pod_network, pod_status
from k3py.agent.runtime.podman import LABEL_CONTAINER

pytestmark = pytest.mark.unit

T0 = "2024-01-01T10:00:00.123456789Z"
T1 = "2024-01-01T10:00:01.000000000Z"


def _inspect(name: str | None, status: str = "running", code: int = 0, ip: str = "",
             infra: bool = False) -> dict:
    labels = {LABEL_CONTAINER: name} if name else {}
    return {"Id": f"id-{name or 'infra'}", "Image": "sha-1", "IsInfra": infra,
            "Config": {"Labels": labels}, "NetworkSettings": {"IPAddress": ip},
            "State": {"Status": status, "ExitCode": code, "StartedAt": T0,
                      "FinishedAt": T1 if status == "exited" else "0001-01-01T00:00:00Z"}}


def _pod(policy: str = "Always", init: tuple[str, ...] = (), host_network: bool = False
         ) -> dict:
    spec: dict = {"restartPolicy": policy, "containers": [{"name": "app", "image": "img"}]}
    if init:
        spec["initContainers"] = [{"name": n, "image": "img"} for n in init]
    if host_network:
        spec["hostNetwork"] = True
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": spec}


def _status(pod: dict, containers: list[dict], restarts: dict | None = None,
            probes: dict | None = None, error: tuple[str, str] | None = None,
            now: float = 0.0) -> dict:
    restarts = {} if restarts is None else restarts
    by_name, ips = pod_network(pod, containers, "192.168.1.5")
    p = plan(pod, containers, restarts, {}, now=now) if containers else None
    return pod_status(pod, created=T0, by_name=by_name, pod_ips=ips, host_ip="192.168.1.5",
                      plan=p, error=error, restarts=restarts, probes=probes or {})


def _cond(status: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def test_phase_of():
    run, ok, bad = ({"running": {}}, {"terminated": {"exitCode": 0}},
                    {"terminated": {"exitCode": 1}})
    assert phase_of("Always", []) == "Pending"
    assert phase_of("Always", [run, bad]) == "Running"
    assert phase_of("Always", [ok]) == "Running"
    assert phase_of("OnFailure", [ok]) == "Succeeded"
    assert phase_of("OnFailure", [bad]) == "Running"
    assert phase_of("Never", [ok, bad]) == "Failed"
    assert phase_of("Never", [ok]) == "Succeeded"


def test_dual_stack_pod_lists_both_ips_ipv4_first():
    infra = _inspect(None, infra=True)
    infra["NetworkSettings"] = {"Networks": {"k3py-n": {
        "IPAddress": "10.42.0.7", "GlobalIPv6Address": "2001:cafe:42::7"}}}
    st = _status(_pod(), [_inspect("app"), infra])
    assert st["podIP"] == "10.42.0.7"
    assert st["podIPs"] == [{"ip": "10.42.0.7"}, {"ip": "2001:cafe:42::7"}]


def test_running_pod_is_ready_with_the_infra_containers_ip():
    st = _status(_pod(), [_inspect("app", ip="10.42.0.9"), _inspect(None, ip="10.42.0.7",
                                                                    infra=True)])
    assert st["phase"] == "Running"
    assert st["podIP"] == "10.42.0.7" and st["podIPs"] == [{"ip": "10.42.0.7"}]
    assert st["hostIP"] == "192.168.1.5" and st["startTime"] == "2024-01-01T10:00:00Z"
    assert _cond(st) == {"PodScheduled": "True", "Initialized": "True",
                         "ContainersReady": "True", "Ready": "True"}
    (cs,) = st["containerStatuses"]
    assert cs["state"] == {"running": {"startedAt": "2024-01-01T10:00:00Z"}}
    assert cs["ready"] and cs["started"] and cs["restartCount"] == 0
    assert cs["containerID"] == "podman://id-app" and cs["imageID"] == "sha-1"
    assert st["qosClass"] == "BestEffort" and "initContainerStatuses" not in st


def test_host_network_pod_has_the_node_ip():
    st = _status(_pod(host_network=True), [_inspect("app")])
    assert st["podIP"] == "192.168.1.5"


def test_no_containers_yet():
    st = _status(_pod(), [])
    assert st["phase"] == "Pending" and "podIP" not in st and st["podIPs"] == []
    assert st["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    st = _status(_pod(), [], error=("CreateContainerError", "no netns"))
    assert st["containerStatuses"][0]["state"] == {
        "waiting": {"reason": "CreateContainerError", "message": "no netns"}}


def test_init_containers_pending_then_initialized():
    pod = _pod(init=("setup",))
    st = _status(pod, [_inspect("setup")])
    assert st["phase"] == "Pending" and _cond(st)["Initialized"] == "False"
    assert st["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    (ics,) = st["initContainerStatuses"]
    assert "running" in ics["state"] and ics["started"] and not ics["ready"]
    st = _status(pod, [_inspect("setup", "exited", 0), _inspect("app")])
    assert st["phase"] == "Running" and _cond(st)["Initialized"] == "True"
    assert st["initContainerStatuses"][0]["ready"]
    assert st["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"


def test_crash_loop_back_off_keeps_the_ended_run_as_last_state():
    restarts = {"app": RestartState(restarts=2, backoff=20.0)}
    st = _status(_pod(), [_inspect("app", "exited", 137)], restarts, now=1704103202.0)
    (cs,) = st["containerStatuses"]
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert cs["lastState"]["terminated"]["exitCode"] == 137
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    assert cs["restartCount"] == 2 and not cs["ready"]
    assert st["phase"] == "Running" and _cond(st)["Ready"] == "False"


def test_never_restarted_container_fails_the_pod():
    st = _status(_pod("Never"), [_inspect("app", "exited", 3)])
    assert st["phase"] == "Failed"
    assert st["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    st = _status(_pod("Never", init=("setup",)), [_inspect("setup", "exited", 1)])
    assert st["phase"] == "Failed"


def test_probes_gate_started_and_ready():
    st = _status(_pod(), [_inspect("app")], probes={"app": (True, False)})
    cs = st["containerStatuses"][0]
    assert cs["started"] and not cs["ready"] and _cond(st)["Ready"] == "False"
    st = _status(_pod(), [_inspect("app")], probes={"app": (False, True)})
    assert not st["containerStatuses"][0]["started"]
    assert not st["containerStatuses"][0]["ready"]
