"""The node's own dashboard and the devices' history, on a real server (--disable-agent) and a
real agent with `--dashboard-port`, a busybox pod and a Device bound to it:

- a twin reported with a real MQTT publish (paho, on the agent's broker) reaches the server's
  ring buffer, which /dashboard/api/twinhistory returns and the server page's plot opens with;
  the Nodes view shows the agent's tunnel connected with its round trip;
- the edge page (a real headless Chromium) asks for the node's token, then shows the pod
  Running, its logs, the device's twin and the MQTT traffic; nothing is served without the
  token; then the server is stopped and the page, reloaded, still shows the pod and follows its logs.

Screenshots (the page area at 1280x800 and 360x640) go to $K3PY_DASHBOARD_SCREENSHOTS when it
names a folder."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import paho.mqtt.publish as publish
import pytest

from tests.harness import ServerProcess, clean_env, free_port, wait_for
from tests.integration.agents import IMAGE, build_test_image, remove_podman_pods, stop_proc
from tests.integration.test_dashboard import (  # noqa: F401 - browser: the module's fixture
    _css_text,
    _log_in,
    _open,
    _screenshots,
    _text,
    browser,
)

pytestmark = pytest.mark.integration

NODE = "edge-view"
_MODEL = {"apiVersion": "devices.kubeedge.io/v1alpha1", "kind": "DeviceModel",
          "metadata": {"name": "thermo-model", "namespace": "default"},
          "spec": {"properties": [{"name": "temperature", "type": {"string": {
              "accessMode": "ReadOnly", "defaultValue": ""}}}]}}
_DEVICE = {"apiVersion": "devices.kubeedge.io/v1alpha2", "kind": "Device",
           "metadata": {"name": "thermo", "namespace": "default"},
           "spec": {"deviceModelRef": {"name": "thermo-model"}, "nodeSelector": {
               "nodeSelectorTerms": [{"matchExpressions": [
                   {"key": "", "operator": "In", "values": [NODE]}]}]}},
           "status": {"twins": [{"propertyName": "temperature",
                                 "desired": {"metadata": {"type": "string"}, "value": ""}}]}}
_POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "edge-pod", "namespace": "default"},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 0, "containers": [{
            "name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", "echo hello from the edge; i=0; "
                        "while true; do i=$((i + 1)); echo tick $i; sleep 1; done"]}]}}


class Edge:
    def __init__(self, srv: ServerProcess, proc: subprocess.Popen, data_dir: Path,
                 dashboard_port: int, mqtt_port: int) -> None:
        self.srv, self.proc, self.data_dir = srv, proc, data_dir
        self.url = f"http://127.0.0.1:{dashboard_port}/dashboard/"
        self.mqtt_port = mqtt_port

    def token(self) -> str:
        return (self.data_dir / "agent" / "dashboard-token").read_text().strip()


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edge-dashboard")
    build_test_image(tmp / "busybox.tar")
    srv = ServerProcess(tmp / "srv").start()
    dashboard_port, mqtt_port = free_port(), free_port()
    log = open(tmp / "agent.log", "wb")
    proc = subprocess.Popen(
        srv.agent_command(tmp / "agent", NODE, "--dashboard-port", str(dashboard_port),
                          "--mqtt-port", str(mqtt_port)),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=clean_env())
    try:
        for obj in (_MODEL, _DEVICE, _POD):
            srv.kubectl("apply", "-f", "-", input=json.dumps(obj))
        wait_for(lambda: srv.kubectl_json("get", "pod", "edge-pod")["status"].get("phase")
                 == "Running", 60, 0.3,
                 f"edge-pod Running on the agent (agent log: {(tmp / 'agent.log').read_text()[-2000:]})")
        yield Edge(srv, proc, tmp / "agent", dashboard_port, mqtt_port)
    finally:
        stop_proc(proc)
        log.close()
        remove_podman_pods(NODE)
        srv.stop()


def _reported(srv: ServerProcess) -> str | None:
    twins = srv.kubectl_json("get", "device", "thermo").get("status", {}).get("twins") or []
    return next((t.get("reported", {}).get("value") for t in twins
                 if t.get("propertyName") == "temperature"), None)


def _publish(edge: Edge, value: str) -> None:
    """What a mapper sends: a twin update on the node's own broker (KubeEdge's topic)."""
    publish.single("$hw/events/device/default/thermo/twin/update", json.dumps({
        "event_id": "", "timestamp": int(time.time() * 1000), "twin": {"temperature": {
            "actual": {"value": value}, "metadata": {"type": "Updated"}}}}),
        qos=1, hostname="127.0.0.1", port=edge.mqtt_port)


def _last_tick(logs: str) -> int:
    ticks = re.findall(r"^tick (\d+)$", logs, re.MULTILINE)
    return int(ticks[-1]) if ticks else 0


def _admin_token(srv: ServerProcess) -> str:
    srv.kubectl("-n", "kube-system", "create", "serviceaccount", "edge-admin")
    srv.kubectl("create", "clusterrolebinding", "edge-admin", "--clusterrole=cluster-admin",
                "--serviceaccount=kube-system:edge-admin")
    return srv.kubectl("-n", "kube-system", "create", "token", "edge-admin").stdout.strip()


def test_twin_history_and_tunnel_figures_on_the_server(edge, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    srv = edge.srv
    for value in ("21.5", "22.5"):
        _publish(edge, value)
        wait_for(lambda v=value: _reported(srv) == v, 20, 0.2,
                 f"the server's Device reported {value} (published on the node's broker)")
    token = _admin_token(srv)
    browser.get(srv.url + "/dashboard/")
    _log_in(browser, token)
    _open(browser, "Nodes", "nodes")
    cell = f"td.tunnel[data-node='{NODE}']"
    wait_for(lambda: "rtt" in _css_text(browser, cell), 15,
             what=f"the tunnel with its round trip (it shows {_css_text(browser, cell)!r})")
    _screenshots(browser, "nodes")
    _open(browser, "Devices", "devices")
    wait_for(lambda: _css_text(browser, "td.reported[data-device='thermo']") == "22.5", 15,
             what="the twin's reported 22.5 in the page")
    history = browser.execute_async_script(
        "const done = arguments[0]; fetch('/dashboard/api/twinhistory?namespace=default"
        "&name=thermo&property=temperature', {headers: {'X-K3py-Dashboard': '1'}})"
        ".then((r) => r.json()).then(done, (e) => done(String(e)))")
    assert history["values"][-2:] == [21.5, 22.5], history
    browser.find_element(By.XPATH, "//table[@id='devices']//button[text()='plot']").click()
    wait_for(lambda: int(browser.find_element(By.ID, "plot").get_attribute("data-points") or 0)
             >= 2, 15, what="the plot opened with the twin's history (two points)")
    _screenshots(browser, "devices-history")


def test_edge_page_shows_the_node_and_outlives_the_server(edge, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(edge.url + "api/logs?namespace=default&pod=edge-pod&container=c",
                               timeout=5)
    assert refused.value.code == 401  # nothing without the node's token
    browser.get(edge.url)
    wait_for(lambda: browser.find_elements(By.ID, "token"), 15,
             what=f"the edge login form (page: {_text(browser, 'app')!r}, console: "
                  f"{browser.get_log('browser')})")
    _screenshots(browser, "edge-login")
    _log_in(browser, edge.token())
    wait_for(lambda: "edge-pod" in _text(browser, "pods") and "Running" in _text(browser, "pods"),
             15, what=f"edge-pod Running in the edge page (it shows {_text(browser, 'pods')!r})")
    assert "connected" in _text(browser, "node-line")
    status = browser.execute_async_script(
        "const done = arguments[0]; fetch('api/logs?namespace=default&pod=edge-pod&container=c"
        "&follow=maybe').then((r) => done(r.status), (e) => done(String(e)))")
    assert status == 400, f"follow=maybe answered {status}"
    _screenshots(browser, "edge-pods")
    _publish(edge, "23.5")
    _open(browser, "Devices", "devices")
    wait_for(lambda: _css_text(browser, "td.reported[data-device='thermo']") == "23.5", 15,
             what="the twin's reported value in the edge page")
    _screenshots(browser, "edge-devices")
    _open(browser, "MQTT", "mqtt")
    wait_for(lambda: "thermo/twin/update" in _text(browser, "mqtt"), 15,
             what="the twin update in the edge page's MQTT tail")
    _screenshots(browser, "edge-mqtt")

    edge.srv.stop()
    wait_for(lambda: "unreachable" in _text(browser, "node-line"), 30,
             what="the server unreachable in the edge page")
    browser.refresh()  # a fresh load, with the server gone
    _open(browser, "Pods", "pods")
    wait_for(lambda: "edge-pod" in _text(browser, "pods"), 15,
             what="edge-pod in the reloaded page with the server stopped")
    browser.find_element(By.CSS_SELECTOR, "[data-logs='edge-pod']").click()
    wait_for(lambda: "hello from the edge" in _text(browser, "logs"), 15,
             what=f"edge-pod's logs with the server stopped (page: {_text(browser, 'logs')!r})")
    first = _last_tick(_text(browser, "logs"))
    wait_for(lambda: _last_tick(_text(browser, "logs")) > first, 15,
             what=f"a line after tick {first} in the followed logs, without a reload")
    _screenshots(browser, "edge-logs-offline")
