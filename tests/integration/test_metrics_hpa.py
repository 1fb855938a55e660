"""metrics-server and the HorizontalPodAutoscaler on a real server with its embedded agent and
real podman pods: `kubectl top` shows a pod burning CPU above one that sleeps, and an HPA made
with `kubectl autoscale` scales the burning Deployment from 1 to 3 and, once the burn stops,
back to 1 after its (shortened) scale-down stabilization window. Usage is reported every 2 s
and the HPA syncs every 2 s here (--metrics-resolution, --kube-controller-manager-arg)."""

from __future__ import annotations

import json

import pytest

from tests.harness import ServerProcess, wait_for
from tests.integration.agents import IMAGE, embedded_node

pytestmark = pytest.mark.integration

# burns one CPU (limited to 200m) until /tmp/stop exists, then sleeps; requests 100m
BURN = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "burn", "namespace": "default"},
    "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "burn"}},
             "template": {"metadata": {"labels": {"app": "burn"}}, "spec": {
                 "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "burn", "image": IMAGE, "command": [
                     "sh", "-c", "while [ ! -e /tmp/stop ]; do :; done; exec sleep 3600"],
                     "resources": {"requests": {"cpu": "100m"},
                                   "limits": {"cpu": "200m"}}}]}}}}
IDLE = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "idle", "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "idle", "image": IMAGE,
                                 "command": ["sleep", "3600"]}]}}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    env = {"K3PY_METRICS_RESOLUTION": "2s",
           "K3PY_KUBE_CONTROLLER_MANAGER_ARG": "horizontal-pod-autoscaler-sync-period=2s"}
    with embedded_node(tmp_path_factory.mktemp("metrics"), "metrics", env=env) as s:
        for obj in (BURN, IDLE):
            s.kubectl("apply", "-f", "-", input=json.dumps(obj))
        yield s


def _top(srv, *args: str) -> list[list[str]]:
    out = srv.kubectl("top", *args)
    return [line.split() for line in out.stdout.splitlines()[1:]]


def _millicores(cell: str) -> int:
    return int(cell[:-1]) if cell.endswith("m") else int(cell) * 1000


def _burn_above_idle(srv) -> dict[str, int] | None:
    rows = {row[0].split("-")[0]: _millicores(row[2]) for row in _top(srv, "pods",
                                                                         "--containers")}
    if "burn" in rows and "idle" in rows and rows["burn"] >= 50 and \
            rows["burn"] > rows["idle"] + 40:
        return rows
    return None


def test_kubectl_top_shows_the_burning_pod_above_the_sleeping_one(srv):
    rows = wait_for(lambda: _burn_above_idle(srv), 60, 1, "kubectl top pods --containers "
                    "showing burn above idle")
    assert rows["burn"] <= 260, f"the 200m limit holds: {rows}"
    nodes = _top(srv, "nodes")
    assert nodes[0][0] == srv.node and _millicores(nodes[0][1]) >= 50, nodes
    everywhere = _top(srv, "pods", "-A")
    assert {(r[0], r[1].split("-")[0]) for r in everywhere} >= {("default", "burn"),
                                                                 ("default", "idle")}
    api = srv.kubectl_json("get", "apiservice", "v1beta1.metrics.k8s.io")
    assert [(c["type"], c["status"]) for c in api["status"]["conditions"]] == \
        [("Available", "True")]
    one = json.loads(srv.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/"
                                                 "default/pods/idle").stdout)
    assert one["containers"][0]["name"] == "idle" and one["window"].startswith("2"), one


def _hpa(srv) -> dict:
    return srv.kubectl_json("get", "hpa", "burn")


def _replicas(srv, want: int) -> dict | None:
    d = srv.kubectl_json("get", "deployment", "burn")
    hpa = _hpa(srv)
    ok = d["spec"]["replicas"] == want and hpa["status"].get("desiredReplicas") == want
    return hpa if ok else None


def test_hpa_scales_the_burning_deployment_up_and_back_down(srv):
    # a low target: even a burn slowed by a busy machine (> 40m of its 100m request) asks
    # for 3 or more
    srv.kubectl("autoscale", "deployment", "burn", "--min=1", "--max=3", "--cpu=20%")
    srv.kubectl("patch", "hpa", "burn", "--type=merge", "-p", json.dumps(
        {"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 4}}}}))
    hpa = wait_for(lambda: _replicas(srv, 3), 60, 1, "the HPA scaling burn to 3")
    conditions = {c["type"]: c for c in hpa["status"]["conditions"]}
    assert conditions["ScalingActive"]["reason"] == "ValidMetricFound"
    assert conditions["ScalingLimited"]["status"] == "True", conditions  # more wanted, max 3
    table = srv.kubectl("get", "hpa", "burn").stdout.splitlines()
    assert table[0].split() == ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS",
                                "REPLICAS", "AGE"]
    assert "Deployment/burn" in table[1] and "%/20%" in table[1], table
    events = srv.kubectl_json("get", "events", "--field-selector",
                              "involvedObject.name=burn,reason=SuccessfulRescale")
    assert any(e["message"] == "New size: 3; reason: cpu resource utilization (percentage "
               "of request) above target" for e in events["items"]), events["items"]
    v1 = json.loads(srv.kubectl("get", "--raw", "/apis/autoscaling/v1/namespaces/default/"
                                                "horizontalpodautoscalers/burn").stdout)
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 20
    assert v1["status"]["currentCPUUtilizationPercentage"] > 40

    def all_running() -> list[str] | None:
        pods = srv.kubectl_json("get", "pods", "-l", "app=burn")["items"]
        names = [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"]
        return names if len(names) == 3 else None
    for name in wait_for(all_running, 60, 0.5, "three burn pods running"):
        srv.kubectl("exec", name, "--", "touch", "/tmp/stop")
    hpa = wait_for(lambda: _replicas(srv, 1), 60, 1, "the HPA scaling burn back to 1")
    assert hpa["status"]["currentMetrics"][0]["resource"]["name"] == "cpu"
    assert "All metrics below target" in srv.kubectl("get", "events", "--field-selector",
                                                     "involvedObject.name=burn").stdout


def test_disable_metrics_server_serves_no_metrics_api(tmp_path):
    other = ServerProcess(tmp_path / "k3py", extra_args=["--disable", "metrics-server"])
    try:
        other.start()
        groups = json.loads(other.kubectl("get", "--raw", "/apis").stdout)["groups"]
        assert "metrics.k8s.io" not in {g["name"] for g in groups}
        assert "autoscaling" in {g["name"] for g in groups}
        out = other.kubectl("top", "nodes", check=False)
        assert out.returncode != 0 and "Metrics API not available" in out.stderr, out.stderr
    finally:
        other.stop()
