"""The server page's MQTT view, on a real server (--disable-agent) and a real agent with its
embedded broker, a Device bound to it and a mapper (a paho client with its own client id)
publishing twin updates on the node's broker, and one message the twin refuses:

- the Overview's MQTT card counts the cluster's messages per second;
- the node's MQTT page (from the Nodes view) lists the mapper among the broker's clients, the
  twin update topic with its messages per second, and a live tail with the payload and the
  error answer; a topic filter keeps only what matches;
- a user who may read nodes but not Devices sees the tail's topics and sizes, never a payload;
- the node tails its bus only while a tab shows its MQTT page: its count of open tails goes
  back to 0 when the tab leaves the page and when the tab is closed;
- on the tab's websocket: the "mqtt" feed carries the node's summary; a bad topic filter gets
  400, a node that is not connected 503, a user who may not read nodes 403.

Screenshots (1280x800 and 360x640) go to $K3PY_DASHBOARD_SCREENSHOTS when it names a folder."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import paho.mqtt.publish as publish
import pytest

from tests.harness import ServerProcess, clean_env, free_port, wait_for
from tests.integration import test_dashboard_edge as edge_view
from tests.integration.agents import stop_proc
from tests.integration.test_dashboard import (  # noqa: F401 - browser: the module's fixture
    _css_text,
    _log_in,
    _logged_out,
    _login,
    _next,
    _screenshots,
    _session,
    _text,
    browser,
    run,
)

pytestmark = pytest.mark.integration

NODE = "mqtt-view"
MAPPER = "thermo-mapper"
UPDATE = "$hw/events/device/default/thermo/twin/update"
_DEVICE = json.loads(json.dumps(edge_view._DEVICE).replace(edge_view.NODE, NODE))
# may read nodes (and so open a node's MQTT page), not Devices
_NODE_READER = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "node-reader"},
                "rules": [{"apiGroups": [""], "resources": ["nodes"],
                           "verbs": ["get", "list", "watch"]}]}


class Mapper:
    """A mapper on the node's broker: one update of the twin every 0.2 s (at most 600, for
    two minutes at most), from paho's own connection with a client id of its own."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=MAPPER,
                                  protocol=mqtt.MQTTv311)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_for(self.client.is_connected, 10, what="the mapper connected to the node's broker")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for i in range(600):
            if self.stop.wait(0.2):
                return
            self.client.publish(UPDATE, json.dumps({
                "event_id": "", "timestamp": int(time.time() * 1000), "twin": {"temperature": {
                    "actual": {"value": f"{20 + i % 10}.5"}, "metadata": {"type": "Updated"}}}}),
                qos=1)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mqtt-dashboard")
    srv = ServerProcess(tmp / "srv").start()
    mqtt_port = free_port()
    log = open(tmp / "agent.log", "wb")
    proc = subprocess.Popen(srv.agent_command(tmp / "agent", NODE, "--mqtt-port", str(mqtt_port)),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=clean_env())
    mapper = None
    try:
        for obj in (edge_view._MODEL, _DEVICE, _NODE_READER):
            srv.kubectl("apply", "-f", "-", input=json.dumps(obj))
        wait_for(lambda: _node_ready(srv), 60, 0.3,
                 f"node {NODE} Ready (agent log: {_tail(tmp / 'agent.log')})")
        mapper = Mapper(mqtt_port)
        yield srv, mqtt_port
    finally:
        if mapper is not None:
            mapper.close()
        stop_proc(proc)
        log.close()
        srv.stop()


def _node_ready(srv: ServerProcess) -> bool:
    found = srv.kubectl("get", "node", NODE, "-o", "json", check=False)
    if found.returncode:
        return False
    conditions = json.loads(found.stdout).get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


def _token(srv: ServerProcess, name: str, role: str) -> str:
    srv.kubectl("-n", "kube-system", "create", "serviceaccount", name)
    srv.kubectl("create", "clusterrolebinding", name, f"--clusterrole={role}",
                f"--serviceaccount=kube-system:{name}")
    return srv.kubectl("-n", "kube-system", "create", "token", name).stdout.strip()


def _rate(driver, selector: str) -> float:
    text = _css_text(driver, selector)
    try:
        return float(text)
    except ValueError:
        return 0.0


def _open_mqtt(driver) -> None:
    from selenium.webdriver.common.by import By
    driver.find_element(By.XPATH, "//nav/button[text()='Nodes']").click()
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, f"[data-mqtt='{NODE}']"), 15,
             what="the node's MQTT button in the Nodes view")
    driver.find_element(By.CSS_SELECTOR, f"[data-mqtt='{NODE}']").click()
    wait_for(lambda: driver.find_elements(By.ID, "mqtt-tail"), 15, what="the MQTT page")


def _tail_rows(driver) -> list[tuple[str, str, str]]:
    """(direction, topic, payload cell) of each row of the live tail, read at once (the
    rows change several times a second)."""
    return [tuple(r) for r in driver.execute_script(
        "return [...document.querySelectorAll('#mqtt-tail tbody tr')].map((tr) => "
        "[...tr.cells].map((td) => td.innerText)).filter((c) => c.length === 5)"
        ".map((c) => [c[1], c[2], c[4]])")]


def test_mqtt_view_shows_clients_rates_and_the_live_tail(cluster, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    srv, mqtt_port = cluster
    driver = browser
    driver.get(srv.url + "/dashboard/")
    _log_in(driver, _token(srv, "mqtt-admin", "cluster-admin"))
    card = "#overview-mqtt [data-count='msg/s']"
    wait_for(lambda: _rate(driver, card) > 0, 20,
             what=f"the Overview's MQTT msg/s above 0 (it shows {_css_text(driver, card)!r})")
    _screenshots(driver, "overview-mqtt")

    _open_mqtt(driver)
    wait_for(lambda: MAPPER in _text(driver, "mqtt-clients"), 20,
             what=f"the mapper among the broker's clients ({_text(driver, 'mqtt-clients')!r})")
    rate = f"#mqtt-topics td.rate[data-topic='{UPDATE}']"
    wait_for(lambda: _rate(driver, rate) > 0, 20,
             what=f"the twin update topic's msg/s ({_text(driver, 'mqtt-topics')!r})")
    wait_for(lambda: any(d == "in" and t == UPDATE and "temperature" in p
                         for d, t, p in _tail_rows(driver)), 20,
             what=f"the mapper's update with its payload in the tail ({_tail_rows(driver)[:3]})")
    # a message the twin refuses: its error answer shows in the tail, and in the counts
    publish.single(UPDATE, "not json", qos=1, hostname="127.0.0.1", port=mqtt_port)
    wait_for(lambda: any(d == "error" and t == UPDATE + "/result" and "400" in p
                         for d, t, p in _tail_rows(driver)), 20,
             what=f"the error answer in the tail ({_tail_rows(driver)[:3]})")
    wait_for(lambda: _css_text(driver, "#mqtt-tails") == "1 live tail open", 15,
             what=f"the node's count of its tails ({_css_text(driver, '#mqtt-tails')!r})")
    _screenshots(driver, "mqtt")

    field = driver.find_element(By.ID, "mqtt-filter")
    field.send_keys(Keys.CONTROL, "a")  # typed over (input events), as a user replaces it
    field.send_keys("$hw/events/device/+/+/twin/update/document")
    field.submit()
    wait_for(lambda: _tail_rows(driver) and all(t.endswith("/twin/update/document")
                                                for _, t, _ in _tail_rows(driver)), 20,
             what=f"only documents in the filtered tail ({_tail_rows(driver)[:3]}, "
                  f"{_text(driver, 'mqtt-tail-error')!r})")

    driver.find_element(By.ID, "logout").click()
    _log_in(driver, _token(srv, "mqtt-node-reader", "node-reader"))
    _open_mqtt(driver)
    wait_for(lambda: any(t == UPDATE for _, t, _ in _tail_rows(driver)), 20,
             what="the mapper's updates in the tail, as a user who may not read Devices")
    rows = _tail_rows(driver)
    assert all("temperature" not in p and "hidden" in p for _, _, p in rows), rows
    _screenshots(driver, "mqtt-no-payloads")


def test_mqtt_feeds_on_the_live_socket_are_authorized_and_checked(cluster):
    srv, _ = cluster
    admin = _token(srv, "mqtt-feeds-admin", "cluster-admin")
    srv.kubectl("-n", "kube-system", "create", "serviceaccount", "mqtt-nobody")
    nobody = srv.kubectl("-n", "kube-system", "create", "token", "mqtt-nobody").stdout.strip()
    origin = {"Origin": srv.url}

    async def socket(http, token: str):
        cookie = {"Cookie": (await _login(http, srv.url, token))["Cookie"]}
        return await http.ws_connect(srv.url + "/dashboard/api/live",
                                     headers={**cookie, **origin})

    async def check() -> None:
        async with await _session() as http:
            async with await socket(http, admin) as ws:
                await ws.send_json({"op": "mqtt", "id": "m"})
                msg = await _next(ws, "m")
                while NODE not in msg["data"]["nodes"]:  # bounded by run()'s deadline
                    msg = await _next(ws, "m")
                summary = msg["data"]["nodes"][NODE]
                assert MAPPER in [c["id"] for c in summary["clients"]], summary
                assert UPDATE in [t["topic"] for t in summary["topics"]], summary
                await ws.send_json({"op": "mqtttail", "id": "bad", "node": NODE,
                                    "filter": "a/#/b"})
                assert (await _next(ws, "bad"))["code"] == 400
                await ws.send_json({"op": "mqtttail", "id": "gone", "node": "no-such-node"})
                assert (await _next(ws, "gone"))["code"] == 503
            async with await socket(http, nobody) as ws:
                for sid, op in (("m", "mqtt"), ("t", "mqtttail")):
                    await ws.send_json({"op": op, "id": sid, "node": NODE})
                    assert (await _next(ws, sid))["code"] == 403
    run(check())


def _tails_become(srv: ServerProcess, token: str, wanted: int) -> None:
    """Wait until the node's own count of open tails (its MQTT summary, on the "mqtt" feed)
    is `wanted`: the node reports it within a few seconds of a change."""
    async def follow() -> None:
        async with await _session() as http:
            cookie = (await _login(http, srv.url, token))["Cookie"]
            async with http.ws_connect(srv.url + "/dashboard/api/live",
                                       headers={"Cookie": cookie, "Origin": srv.url}) as ws:
                await ws.send_json({"op": "mqtt", "id": "m"})
                seen = None
                try:
                    async with asyncio.timeout(20):
                        while seen != wanted:
                            msg = await _next(ws, "m")
                            seen = msg["data"]["nodes"].get(NODE, {}).get("tails")
                except TimeoutError:
                    raise AssertionError(f"{NODE} reports {seen} open tails, not {wanted}, "
                                         f"after 20 s") from None
    run(follow())


def test_the_nodes_tail_stops_when_the_tab_leaves_the_page_or_closes(cluster,  # noqa: F811
                                                                      browser):  # noqa: F811
    """The server closes the tail stream through the tunnel, and the node stops tailing its
    bus, when the tab goes back to the Nodes view and when the tab is closed."""
    from selenium.webdriver.common.by import By
    srv, _ = cluster
    admin = _token(srv, "mqtt-tails-admin", "cluster-admin")
    driver = browser
    _logged_out(driver, srv)  # the page the module's other test left on the MQTT view
    _tails_become(srv, admin, 0)
    first = driver.current_window_handle
    driver.switch_to.new_window("tab")
    try:
        _logged_out(driver, srv)
        _log_in(driver, admin)
        _open_mqtt(driver)
        _tails_become(srv, admin, 1)
        wait_for(lambda: _css_text(driver, "#mqtt-tails") == "1 live tail open", 15,
                 what=f"the page's count of the node's tails ({_css_text(driver, '#mqtt-tails')!r})")
        driver.find_element(By.XPATH, "//button[text()='Back to nodes']").click()
        _tails_become(srv, admin, 0)
        _open_mqtt(driver)
        _tails_become(srv, admin, 1)
    finally:
        driver.close()
        driver.switch_to.window(first)
    _tails_become(srv, admin, 0)
