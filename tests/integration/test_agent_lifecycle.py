"""The pod lifecycle on the agent, as the kubelet does it: restarts with CrashLoopBackOff,
restart policies, init containers, image pull errors and their backoff, probes (exec, httpGet,
tcpSocket), Events, QoS class and resource limits.

One `k3py server` with its embedded agent for the module (real podman, the offline busybox test
image), driven with the real kubectl; the podman pods of its node are removed at teardown."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest

from tests.harness import wait_for
from tests.integration.agents import IMAGE, container_status, embedded_node

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman")]

@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with embedded_node(tmp_path_factory.mktemp("lifecycle"), "lc", timeout=30) as s:
        yield s


def _apply(srv, name: str, spec: dict) -> None:
    spec = {"nodeName": srv.node, "terminationGracePeriodSeconds": 1, **spec}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    srv.kubectl("apply", "-f", "-", input=json.dumps(pod))


def _c(name: str, script: str, **extra) -> dict:
    return {"name": name, "image": IMAGE, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", script], **extra}


def _pod(srv, name: str) -> dict:
    return srv.kubectl_json("get", "pod", name)


def _events(srv, name: str) -> list[dict]:
    return srv.kubectl_json("get", "events", "--field-selector",
                            f"involvedObject.name={name}")["items"]


def _delete(srv, *names: str) -> None:
    srv.kubectl("delete", "pod", *names, "--wait=false")


def test_crash_loop_backoff(srv):
    _apply(srv, "crash", {"containers": [_c("c", "echo boom; exit 1")]})
    cs = wait_for(lambda: (s := container_status(srv, "crash")).get("restartCount", 0) >= 1 and
                  (s.get("state") or {}).get("waiting", {}).get("reason") ==
                  "CrashLoopBackOff" and s, 40, 0.3, "CrashLoopBackOff")
    uid = _pod(srv, "crash")["metadata"]["uid"]
    waiting = cs["state"]["waiting"]
    assert waiting["message"] == (f"back-off 10s restarting failed container=c "
                                  f"pod=crash_default({uid})")
    term = cs["lastState"]["terminated"]
    assert term["exitCode"] == 1 and term["reason"] == "Error"
    assert term["startedAt"] and term["finishedAt"]
    assert "CrashLoopBackOff" in srv.kubectl("get", "pod", "crash").stdout
    pod = _pod(srv, "crash")
    assert pod["status"]["phase"] == "Running"  # restartPolicy Always keeps restarting it
    # after the 10 s backoff it runs (and crashes) again: the count keeps growing
    wait_for(lambda: container_status(srv, "crash").get("restartCount", 0) >= 2, 40, 0.5, "restart 2")
    wait_for(lambda: "20s" in ((container_status(srv, "crash").get("state") or {}).get("waiting") or {})
             .get("message", ""), 20, 0.3, "back-off doubled to 20s")
    describe = srv.kubectl("describe", "pod", "crash").stdout
    assert "Back-off restarting failed container c in pod crash_default" in describe
    assert "BackOff" in describe and "Started" in describe
    _delete(srv, "crash")


def test_restart_policies(srv):
    _apply(srv, "onfail-ok", {"restartPolicy": "OnFailure", "containers": [_c("c", "exit 0")]})
    _apply(srv, "never-bad", {"restartPolicy": "Never", "containers": [_c("c", "exit 3")]})
    _apply(srv, "onfail-bad", {"restartPolicy": "OnFailure",
                               "containers": [_c("c", "sleep 1; exit 2")]})
    wait_for(lambda: _pod(srv, "onfail-ok")["status"].get("phase") == "Succeeded", 40, 0.3,
             "OnFailure + exit 0 -> Succeeded")
    wait_for(lambda: _pod(srv, "never-bad")["status"].get("phase") == "Failed", 40, 0.3,
             "Never + exit 3 -> Failed")
    cs = container_status(srv, "never-bad")
    assert cs["state"]["terminated"]["exitCode"] == 3 and cs["restartCount"] == 0
    assert container_status(srv, "onfail-ok")["state"]["terminated"]["reason"] == "Completed"
    wait_for(lambda: container_status(srv, "onfail-bad").get("restartCount", 0) >= 1, 40, 0.3,
             "OnFailure restarts a failure")
    assert _pod(srv, "onfail-bad")["status"]["phase"] in ("Running", "Pending")
    assert "Completed" in srv.kubectl("get", "pod", "onfail-ok").stdout
    _delete(srv, "onfail-ok", "never-bad", "onfail-bad")


def test_init_containers(srv):
    vol = [{"name": "work", "mountPath": "/work"}]
    _apply(srv, "init", {
        "volumes": [{"name": "work", "emptyDir": {}}],
        "initContainers": [_c("first", "sleep 2; echo one > /work/f", volumeMounts=vol),
                           _c("second", "echo two >> /work/f", volumeMounts=vol)],
        "containers": [_c("app", "cat /work/f; sleep 3600", volumeMounts=vol)]})
    seen = set()

    def running():
        out = srv.kubectl("get", "pod", "init", "--no-headers").stdout
        seen.update(w for w in out.split() if w.startswith("Init:"))
        return "Running" in out
    wait_for(running, 60, 0.2, "init pod Running")
    assert "Init:0/2" in seen, seen
    wait_for(lambda: "one\ntwo" in srv.kubectl("logs", "init", "-c", "app").stdout, 20, 0.3,
             "the app read what the init containers wrote, in order")
    pod = _pod(srv, "init")
    inits = pod["status"]["initContainerStatuses"]
    assert [s["name"] for s in inits] == ["first", "second"]
    assert all(s["state"]["terminated"]["reason"] == "Completed" for s in inits)
    conds = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert conds["Initialized"] == "True" and conds["Ready"] == "True"

    # a failing init container: retried with backoff (Always), or the pod fails (Never)
    _apply(srv, "init-loop", {"initContainers": [_c("bad", "exit 1")],
                              "containers": [_c("app", "sleep 3600")]})
    _apply(srv, "init-never", {"restartPolicy": "Never", "initContainers": [_c("bad", "exit 1")],
                               "containers": [_c("app", "sleep 3600")]})
    wait_for(lambda: "Init:CrashLoopBackOff" in srv.kubectl("get", "pod", "init-loop").stdout,
             40, 0.3, "Init:CrashLoopBackOff")
    assert _pod(srv, "init-loop")["status"]["phase"] == "Pending"
    wait_for(lambda: _pod(srv, "init-never")["status"].get("phase") == "Failed", 40, 0.3,
             "failed init with restartPolicy Never -> Failed")
    st = _pod(srv, "init-never")["status"]
    assert st["containerStatuses"][0]["state"]["waiting"]["reason"] == "PodInitializing"
    assert {c["type"]: c["status"] for c in st["conditions"]}["Initialized"] == "False"
    _delete(srv, "init", "init-loop", "init-never")


def test_image_pull_errors_and_recovery(srv):
    image = f"k3py.local/lifecycle-{uuid.uuid4().hex[:6]}:v1"
    _apply(srv, "pull", {"containers": [{"name": "c", "image": image,
                                         "command": ["sleep", "3600"]}]})
    try:
        w = wait_for(lambda: (container_status(srv, "pull").get("state") or {}).get("waiting", {}).get(
            "reason") == "ErrImagePull" and container_status(srv, "pull")["state"]["waiting"], 30, 0.2,
            "ErrImagePull")
        assert image in w["message"] and "k3py.local" in w["message"]
        wait_for(lambda: "ImagePullBackOff" in srv.kubectl("get", "pod", "pull").stdout, 30,
                 0.3, "ImagePullBackOff")
        reasons = {(e["reason"], e["type"]) for e in _events(srv, "pull")}
        assert ("Failed", "Warning") in reasons
        subprocess.run(["podman", "tag", IMAGE, image], check=True)
        wait_for(lambda: _pod(srv, "pull")["status"].get("phase") == "Running", 40, 0.5,
                 "running once the image is there")
        describe = srv.kubectl("describe", "pod", "pull").stdout
        assert f'Failed to pull image "{image}"' in describe
        _delete(srv, "pull")
    finally:
        subprocess.run(["podman", "rmi", image], capture_output=True)


def test_readiness_exec_probe(srv):
    _apply(srv, "ready", {"containers": [_c("c", "sleep 3600", readinessProbe={
        "exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1,
        "failureThreshold": 1})]})

    def ready() -> str:
        st = _pod(srv, "ready")["status"]
        return {c["type"]: c["status"] for c in st.get("conditions") or []}.get("Ready", "")
    wait_for(lambda: _pod(srv, "ready")["status"].get("phase") == "Running", 30, 0.3, "Running")
    assert ready() == "False" and container_status(srv, "ready")["ready"] is False
    assert "0/1" in srv.kubectl("get", "pod", "ready").stdout
    srv.kubectl("exec", "ready", "--", "touch", "/tmp/ready")
    wait_for(lambda: ready() == "True", 20, 0.3, "Ready after the file appears")
    assert container_status(srv, "ready")["ready"] is True and container_status(srv, "ready")["started"] is True
    srv.kubectl("exec", "ready", "--", "rm", "/tmp/ready")
    wait_for(lambda: ready() == "False", 20, 0.3, "not Ready after it is gone")
    assert container_status(srv, "ready")["restartCount"] == 0  # readiness never restarts
    _delete(srv, "ready")


def test_liveness_http_and_tcp_probes(srv):
    script = "mkdir -p /www && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www"
    _apply(srv, "live", {"containers": [_c(
        "web", script, ports=[{"name": "http", "containerPort": 8080}],
        livenessProbe={"httpGet": {"path": "/healthz", "port": "http",
                                   "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                       "periodSeconds": 1, "failureThreshold": 2},
        readinessProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1},
        startupProbe={"tcpSocket": {"port": "http"}, "periodSeconds": 1,
                      "failureThreshold": 30})]})
    wait_for(lambda: " 1/1 " in srv.kubectl("get", "pod", "live").stdout, 40, 0.3,
             "Ready through the startup and tcpSocket readiness probes")
    assert container_status(srv, "live")["restartCount"] == 0
    srv.kubectl("exec", "live", "--", "rm", "/www/healthz")  # liveness now gets 404s
    wait_for(lambda: container_status(srv, "live").get("restartCount", 0) >= 1, 40, 0.3,
             "restarted after failing liveness")
    wait_for(lambda: " 1/1 " in srv.kubectl("get", "pod", "live").stdout, 40, 0.3,
             "healthy again after the restart (the script recreates the file)")
    cs = container_status(srv, "live")
    assert cs["lastState"]["terminated"]["exitCode"] in (137, 143)
    describe = srv.kubectl("describe", "pod", "live").stdout
    assert "Liveness probe failed: HTTP probe failed with statuscode: 404" in describe
    assert "Container failed liveness probe, will be restarted" in describe
    reasons = {e["reason"] for e in _events(srv, "live")}
    assert {"Unhealthy", "Killing", "Started", "Created", "Pulled"} <= reasons
    # a tcpSocket readiness probe against a closed port never becomes ready
    _apply(srv, "closed", {"containers": [_c("c", "sleep 3600", readinessProbe={
        "tcpSocket": {"port": 9999}, "periodSeconds": 1, "failureThreshold": 1})]})
    wait_for(lambda: any(e["reason"] == "Unhealthy" and "Readiness probe failed: dial tcp"
                         in e["message"] for e in _events(srv, "closed")), 30, 0.5,
             "Unhealthy event of the tcpSocket probe")
    assert container_status(srv, "closed")["ready"] is False
    _delete(srv, "live", "closed")


def test_resources_qos_and_limits(srv):
    res = {"limits": {"cpu": "500m", "memory": "64Mi"}}
    _apply(srv, "guaranteed", {"containers": [_c("c", "sleep 3600", resources=res)]})
    _apply(srv, "burstable", {"containers": [_c("c", "sleep 3600", resources={
        "requests": {"memory": "16Mi"}})]})
    _apply(srv, "besteffort", {"containers": [_c("c", "sleep 3600")]})
    for name, qos in (("guaranteed", "Guaranteed"), ("burstable", "Burstable"),
                      ("besteffort", "BestEffort")):
        wait_for(lambda n=name: _pod(srv, n)["status"].get("phase") == "Running", 40, 0.3,
                 f"{name} Running")
        assert _pod(srv, name)["status"]["qosClass"] == qos
    uid = _pod(srv, "guaranteed")["metadata"]["uid"]
    out = subprocess.run(["podman", "inspect", f"default_guaranteed_c_{uid[:8]}", "--format",
                          "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}"],
                         capture_output=True, text=True, check=True).stdout.split()
    if "podman refused the resource limits" not in srv.log_path.read_text():
        assert out == [str(64 * 2**20), str(500_000_000)]
    else:  # this host's cgroups cannot limit: the pod runs unlimited, with one warning
        assert out == ["0", "0"]
    _delete(srv, "guaranteed", "burstable", "besteffort")


def test_restart_count_survives_an_agent_restart(srv):
    # last in the module: it restarts the server (and so its embedded agent)
    _apply(srv, "persist", {"containers": [_c("c", "sleep 1; exit 1")]})
    wait_for(lambda: container_status(srv, "persist").get("restartCount", 0) >= 2, 60, 0.3, "2 restarts")
    before = container_status(srv, "persist")["restartCount"]
    srv.stop()
    srv.start()
    wait_for(lambda: "True" in srv.kubectl(
        "get", "node", srv.node, "-o",
        "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False).stdout,
        30, 0.3, "node Ready again")
    counts = []

    def grew() -> bool:
        counts.append(container_status(srv, "persist").get("restartCount", 0))
        return counts[-1] > before
    wait_for(grew, 60, 0.5, "restarted again after the agent restart")
    assert min(counts) >= before, counts  # never reset to 0 by the new agent
    _delete(srv, "persist")
