"""examples/data-analysis/run.sh for real on a one-machine k3py: the Deployment's pod 2/2 Running
on the node run.sh labelled and tainted edge, the analysis container's alerts in `kubectl logs`,
and the same alerts seen by a subscriber (Debian's mosquitto_sub) on the agent's own broker.
Then the same on a server plus a joined agent: the pod on the agent's node (EDGE_NODE), the
alerts on the agent's broker, the server's node neither labelled nor tainted."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.demos import demo_cluster, server_and_agent
from tests.harness import wait_for

pytestmark = pytest.mark.integration

EDGE = "node-role.kubernetes.io/edge"


def _taints(node: dict) -> list[dict]:
    return [{k: t[k] for k in ("key", "effect")} for t in node["spec"].get("taints") or []]


def _run_and_check(srv, edge: str, mqtt_port: int, **env: str) -> None:
    """run.sh with `env`; the pod on node `edge`, its alerts on the broker at `mqtt_port`."""
    # a subscriber on the node's broker, before the pod starts: it sees the first alert
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(mqtt_port),
                            "-t", "alert", "-C", "2", "-W", "120"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out = srv.run_sh("data-analysis", **env).stdout
        node = srv.kubectl_json("get", "node", edge)
        assert node["metadata"]["labels"][EDGE] == ""
        assert {"key": EDGE, "effect": "NoSchedule"} in _taints(node)
        pods = srv.kubectl_json("get", "pods", "-l", "app=data-analysis")["items"]
        assert len(pods) == 1
        pod = pods[0]
        assert pod["spec"]["nodeName"] == edge and pod["spec"]["hostNetwork"] is True
        assert pod["status"]["phase"] == "Running"
        assert sorted(c["name"] for c in pod["status"]["containerStatuses"]
                      if c["ready"]) == ["analysis", "publisher"]
        line = srv.kubectl("get", "pod", pod["metadata"]["name"], "--no-headers").stdout
        assert line.split()[1:3] == ["2/2", "Running"], line
        assert "ALERT: machine" in out, out

        logs = srv.kubectl("logs", pod["metadata"]["name"], "-c", "analysis").stdout
        alerts = [ln for ln in logs.splitlines() if ln.startswith("ALERT")]
        assert alerts and all("> 90" in a for a in alerts), logs
        sent = srv.kubectl("logs", pod["metadata"]["name"], "-c", "publisher").stdout
        assert "sent ID=0 MachineID=M7000 Value=80" in sent, sent

        stdout, stderr = sub.communicate(timeout=120)
        assert sub.returncode == 0, stderr
        received = [json.loads(ln) for ln in stdout.splitlines()]
        assert len(received) == 2
        for alert in received:
            assert alert["Alert"] == "HighTemperature" and alert["Device"] == "cc2650"
            assert float(alert["Value"]) > 90 and alert["Units"] == "DegreeCelcius"
            assert alert["MachineID"] in ("M3030", "M5050")
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.communicate()
    srv.kubectl("delete", "deployment", "data-analysis", "--wait=true", timeout=90)
    wait_for(lambda: not srv.kubectl_json("get", "pods", "-l", "app=data-analysis")["items"],
             60, 0.5, "the demo's pod to go")


def test_data_analysis_run_sh(tmp_path, mapper_image):
    with demo_cluster(tmp_path, "da", mapper_image) as srv:
        _run_and_check(srv, srv.node, srv.mqtt_port)


def test_data_analysis_run_sh_server_and_joined_agent(tmp_path, mapper_image):
    with server_and_agent(tmp_path, "d", mapper_image) as (srv, agent):
        _run_and_check(srv, agent.node, agent.mqtt_port, **agent.run_env())
        server = srv.kubectl_json("get", "node", srv.node)
        assert EDGE not in server["metadata"]["labels"]
        assert not [t for t in _taints(server) if t["key"] == EDGE]
