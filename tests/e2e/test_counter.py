"""examples/counter/run.sh for real on a one-machine k3py: the upstream-shaped DeviceModel
(v1alpha1) and Device (v1alpha2), the counter mapper pod, the web controller on host port
WEB_PORT answering the upstream routes with the upstream JSON; ON from the web controller
reaches the mapper (desired down the tunnel) and the count it reports rises in the Device's
status; OFF brings it back to 0. Then the same on a server plus a joined agent: the mapper on
the agent's node (EDGE_NODE), the web controller on the server's."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.e2e.demos import demo_cluster, server_and_agent
from tests.harness import free_port, wait_for

pytestmark = pytest.mark.integration


def _call(port: int, command: str, method: str = "POST") -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/track/control/{command}",
                                 data=b"" if method == "POST" else None, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("application/json")
        return json.loads(r.read())


def _twin(srv, version: str = "v1alpha2") -> dict:
    dev = srv.kubectl_json("get", f"devices.{version}.devices.kubeedge.io", "counter")
    return next(t for t in dev["status"]["twins"] if t["propertyName"] == "status")


def _reported(srv) -> int:
    return int((_twin(srv).get("reported") or {}).get("value") or 0)


def _wait(srv, predicate, timeout: float, what: str) -> None:
    """wait_for, and on timeout the mapper's log and the Device, to tell which side stalled."""
    try:
        wait_for(predicate, timeout, 0.5, what)
    except TimeoutError as e:
        logs = srv.kubectl("logs", "deployment/counter-mapper", check=False)
        raise AssertionError(f"{e}\nmapper log:\n{logs.stdout}{logs.stderr}\ndevice:\n"
                             + srv.kubectl("get", "device", "counter", "-o", "yaml").stdout
                             ) from None


def test_counter_run_sh(tmp_path, mapper_image):
    with demo_cluster(tmp_path, "ct", mapper_image) as srv:
        web = free_port()
        out = srv.run_sh("counter", WEB_PORT=str(web)).stdout
        assert '"Result": 3, "ResultString": {"status": "OFF", "value": "0"}' in out, out
        model = srv.kubectl_json("get", "devicemodels.v1alpha1.devices.kubeedge.io",
                                 "counter-model")
        assert model["spec"]["properties"][0]["type"]["string"]["accessMode"] == "ReadWrite"
        dev = srv.kubectl_json("get", "devices.v1alpha2.devices.kubeedge.io", "counter")
        terms = dev["spec"]["nodeSelector"]["nodeSelectorTerms"]
        assert terms[0]["matchExpressions"][0]["values"] == [srv.node]
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/", timeout=10) as r:
            page = r.read().decode()
        assert "ON</button>" in page and "OFF</button>" in page

        # the upstream answers: ON 1, OFF 2, STATUS 3 with desired/reported, anything else 0
        assert _call(web, "ON") == {"Result": 1, "ResultString": {}, "ResultObject": None}
        assert _twin(srv)["desired"]["value"] == "ON"
        # the mapper was told (desired down to MQTT) and counts; the edge reports the count
        _wait(srv, lambda: _reported(srv) >= 2, 30, "the reported count to reach 2")
        first = _reported(srv)
        _wait(srv, lambda: _reported(srv) >= first + 2, 15, "the count to keep rising")
        status = _call(web, "STATUS", method="GET")
        assert status["Result"] == 3 and status["ResultString"]["status"] == "ON"
        assert int(status["ResultString"]["value"]) >= first + 2
        assert _call(web, "BOGUS") == {"Result": 0, "ResultString": {}, "ResultObject": None}

        assert _call(web, "OFF", method="GET") == {"Result": 2, "ResultString": {},
                                                  "ResultObject": None}
        assert _twin(srv)["desired"]["value"] == "OFF"
        _wait(srv, lambda: _twin(srv)["reported"]["value"] == "0", 30,
              "the reported count back to 0")
        assert _call(web, "STATUS")["ResultString"] == {"status": "OFF", "value": "0"}


def _node_of(srv, app: str) -> str:
    return srv.kubectl_json("get", "pods", "-l", f"app={app}")["items"][0]["spec"]["nodeName"]


def test_counter_run_sh_server_and_joined_agent(tmp_path, mapper_image):
    with server_and_agent(tmp_path, "c", mapper_image) as (srv, agent):
        web = free_port()
        srv.run_sh("counter", WEB_PORT=str(web), **agent.run_env())
        assert _node_of(srv, "counter-mapper") == agent.node
        assert _node_of(srv, "counter-web-controller") == srv.node
        labels = srv.kubectl_json("get", "node", srv.node)["metadata"]["labels"]
        assert "node-role.kubernetes.io/edge" not in labels
        assert _call(web, "ON")["Result"] == 1
        _wait(srv, lambda: _reported(srv) >= 2, 30, "the count from the agent's node")
        assert _call(web, "OFF")["Result"] == 2
        _wait(srv, lambda: _twin(srv)["reported"]["value"] == "0", 30, "the count back to 0")
