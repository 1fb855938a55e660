"""Devices end to end: mapper -> node's MQTT bus -> device twin -> tunnel -> Device status, and
kubectl's desired values back out on MQTT. One server (--disable-agent) and one `k3py agent`
process per module, real kubectl, Debian's mosquitto_pub/mosquitto_sub and paho-mqtt as the
mappers; the agent is SIGKILLed and the server stopped while readings arrive."""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.harness import ServerProcess, clean_env, free_port, wait_for
from tests.integration.agents import remove_podman_pods, stop_proc
from tests.integration.test_crds import MODEL

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("mosquitto_pub") is None,
                                 reason="needs mosquitto-clients (scripts/setup.sh)")]

# the KubeEdge temperature demo's Device (v1alpha2, desired values in status.twins)
V1ALPHA2 = """
apiVersion: devices.kubeedge.io/v1alpha2
kind: Device
metadata: {name: temperature, namespace: default}
spec:
  deviceModelRef: {name: temperature-model}
  nodeSelector:
    nodeSelectorTerms:
    - matchExpressions:
      - {key: '', operator: In, values: [NODE]}
status:
  twins:
  - propertyName: temperature-status
    desired: {metadata: {type: string}, value: ''}
"""

THERMO_MODEL = """
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {name: thermo-model, namespace: default}
spec:
  properties:
  - {name: temperature, type: INT, accessMode: ReadWrite}
  - {name: humidity, type: INT, accessMode: ReadOnly}
"""

V1BETA1 = """
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: thermo, namespace: default}
spec:
  deviceModelRef: {name: thermo-model}
  nodeName: NODE
  properties:
  - name: temperature
    desired: {value: '20'}
    reportCycle: 500
"""

OTHER_NODE = """
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: elsewhere, namespace: default}
spec:
  deviceModelRef: {name: thermo-model}
  nodeName: not-this-node
"""


class Cluster:
    """The server and its one agent; the agent's MQTT port stays the same across restarts."""

    def __init__(self, tmp: Path) -> None:
        self.node = f"twin-{uuid.uuid4().hex[:6]}"
        self.srv = ServerProcess(tmp / "server")
        self.agent_dir = tmp / "agent"
        self.agent_log = tmp / "agent.log"
        self.mqtt_port = free_port()
        self.agent: subprocess.Popen | None = None

    def start_agent(self) -> None:
        with open(self.agent_log, "ab") as log:
            self.agent = subprocess.Popen(
                self.srv.agent_command(self.agent_dir, self.node, "--mqtt-port",
                                       str(self.mqtt_port), "--device-offline-after", "2s"),
                stdout=log, stderr=subprocess.STDOUT, env=clean_env(), start_new_session=True)

    def stop_agent(self, sig: int = signal.SIGTERM) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(sig)
            try:
                self.agent.wait(15)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()

    def logs(self) -> str:
        return self.agent_log.read_text()[-3000:] if self.agent_log.exists() else ""

    def device(self, name: str) -> dict:
        return self.srv.kubectl_json("get", "device", name)

    def reported(self, name: str) -> dict[str, str]:
        twins = (self.device(name).get("status") or {}).get("twins") or []
        return {t["propertyName"]: t["reported"]["value"] for t in twins if "reported" in t}

    def pub(self, topic: str, body: dict) -> None:
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.mqtt_port), "-q", "1",
                        "-t", topic, "-m", json.dumps(body)], check=True, timeout=10)

    def sub(self, topic: str, probe: str) -> Sub:
        """mosquitto_sub on `topic`, returned once it is subscribed (it has seen a probe
        published on `probe`, which `topic` matches)."""
        sub = Sub(self.mqtt_port, topic)
        seen = threading.Event()

        def publish_probes() -> None:
            while not seen.is_set() and sub.proc.poll() is None:
                self.pub(probe, {"probe": True})
                time.sleep(0.2)
        threading.Thread(target=publish_probes, daemon=True).start()
        try:
            sub.until('"probe"', 15)
        finally:
            seen.set()
        return sub


class Sub:
    """A running mosquitto_sub -v; one reader thread, `until` returns the lines up to one
    holding a needle."""

    def __init__(self, port: int, topic: str) -> None:
        self.proc = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port),
                                      "-q", "1", "-v", "-t", topic], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        with contextlib.suppress(ValueError):
            for line in self.proc.stdout:  # type: ignore[union-attr]
                self.lines.put(line)
        self.lines.put(None)

    def until(self, needle: str, timeout: float = 15) -> str:
        seen = ""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"{needle!r} not in {seen!r}")
            seen += line
            if needle in line:
                return seen

    def stop(self) -> None:
        stop_proc(self.proc)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("twin"))
    try:
        c.srv.start()
        c.start_agent()
        wait_for(lambda: c.srv.kubectl("get", "devices", check=False).returncode == 0, 30, 0.2,
                 "devices served")
        wait_for(lambda: b"MQTT broker listening" in c.agent_log.read_bytes(), 60, 0.2,
                 "the agent's broker")
        for manifest in (MODEL, THERMO_MODEL, V1ALPHA2.replace("NODE", c.node),
                         V1BETA1.replace("NODE", c.node), OTHER_NODE):
            c.srv.kubectl("apply", "-f", "-", input=manifest)
        yield c
    finally:
        c.stop_agent()
        c.srv.stop()
        remove_podman_pods(c.node)


def _answer(c: Cluster, topic: str, request: str, body: dict, timeout: float = 15,
            retry_404: bool = True) -> dict:
    """Publish `body` on `request` until an answer shows on `topic` (the device may not have
    reached the twin yet: then the answer is a 404, and with `retry_404` it goes again)."""
    sub = c.sub(topic, topic)
    try:
        deadline = time.monotonic() + timeout
        while True:
            c.pub(request, body)
            line = sub.until(body["event_id"], timeout)
            payload = json.loads(line.strip().splitlines()[-1].split(" ", 1)[1])
            if payload.get("code") != 404 or time.monotonic() > deadline or not retry_404:
                return payload
            time.sleep(0.3)
    finally:
        sub.stop()


def test_reported_values_reach_the_device_status(cluster):
    c = cluster
    # legacy id form, the KubeEdge temperature demo's mapper payload
    _answer(c, "$hw/events/device/temperature/twin/update/result",
            "$hw/events/device/temperature/twin/update",
            {"event_id": "e1", "timestamp": 0,
             "twin": {"temperature-status": {"actual": {"value": "21C"},
                                             "metadata": {"type": "Updated"}}}})
    wait_for(lambda: c.reported("temperature").get("temperature-status") == "21C", 15, 0.2,
             "v1alpha2 status.twins[].reported")
    twin = c.device("temperature")["status"]["twins"][0]
    assert twin["desired"]["value"] == "" and twin["reported"]["metadata"]["type"] == "string"
    assert int(twin["reported"]["metadata"]["timestamp"]) > 1_600_000_000_000

    # v1.17+ id form; humidity is not listed in the status yet: the model names it
    _answer(c, "$hw/events/device/default/thermo/twin/update/result",
            "$hw/events/device/default/thermo/twin/update",
            {"event_id": "e2", "timestamp": 0,
             "twin": {"temperature": {"actual": {"value": "19"}},
                      "humidity": {"actual": {"value": "40"}}}})
    wait_for(lambda: c.reported("thermo") == {"temperature": "19", "humidity": "40"}, 15, 0.2,
             "v1beta1 status.twins[].reported")
    twins = {t["propertyName"]: t for t in c.device("thermo")["status"]["twins"]}
    assert twins["temperature"]["observedDesired"]["value"] == "20"
    assert twins["humidity"]["reported"]["metadata"]["type"] == "int"


def test_desired_values_go_out_on_document_and_delta(cluster):
    c = cluster
    sub = c.sub("$hw/events/device/temperature/twin/update/#",
                "$hw/events/device/temperature/twin/update/probe")
    try:
        patch = [{"op": "replace", "path": "/status/twins/0/desired/value", "value": "30C"}]
        c.srv.kubectl("patch", "device.v1alpha2.devices.kubeedge.io", "temperature",
                      "--type=json", "-p", json.dumps(patch))
        out = sub.until("twin/update/delta", 15)
    finally:
        sub.stop()
    doc = next(json.loads(line.split(" ", 1)[1]) for line in out.splitlines()
               if line.startswith("$hw/events/device/temperature/twin/update/document "))
    assert doc["twin"]["temperature-status"]["current"]["expected"]["value"] == "30C"
    delta = json.loads(out.strip().splitlines()[-1].split(" ", 1)[1])
    assert delta["delta"] == {"temperature-status": "30C"}

    # v1beta1: spec.properties[].desired, on the v1.17+ topics too
    sub = c.sub("$hw/events/device/default/thermo/twin/update/delta",
                "$hw/events/device/default/thermo/twin/update/delta")
    try:
        patch = [{"op": "replace", "path": "/spec/properties/0/desired/value", "value": "25"}]
        c.srv.kubectl("patch", "device", "thermo", "--type=json", "-p", json.dumps(patch))
        out = sub.until('"25"', 15)
    finally:
        sub.stop()
    assert json.loads(out.strip().splitlines()[-1].split(" ", 1)[1])["delta"] == \
        {"temperature": "25"}
    wait_for(lambda: {t["propertyName"]: t for t in c.device("thermo")["status"]["twins"]}
             ["temperature"].get("observedDesired", {}).get("value") == "25", 15, 0.3,
             "observedDesired follows the desired value the edge holds")


def test_state_updates_and_silence(cluster):
    c = cluster
    for state in ("online", "offline", "online"):
        ans = _answer(c, "$hw/events/device/default/thermo/state/update/result",
                      "$hw/events/device/default/thermo/state/update",
                      {"event_id": f"s-{state}", "timestamp": 0, "state": state})
        assert ans["device"]["state"] == state
        wait_for(lambda s=state: c.device("thermo")["status"].get("state") == s, 15, 0.2,
                 f"status.state {state}")
    assert c.device("thermo")["status"]["lastOnlineTime"].endswith("Z")
    # the mapper goes silent: offline after --device-offline-after 2s
    wait_for(lambda: c.device("thermo")["status"].get("state") == "offline", 15, 0.3,
             "offline after the mapper's silence")


def test_unknown_device_is_a_404_answer(cluster):
    ans = _answer(cluster, "$hw/events/device/nosuch/twin/update/result",
                  "$hw/events/device/nosuch/twin/update",
                  {"event_id": "u1", "twin": {"x": {"actual": {"value": "1"}}}},
                  retry_404=False)
    assert ans["code"] == 404
    # a device bound to another node is unknown here too: never reported for it
    ans = _answer(cluster, "$hw/events/device/elsewhere/twin/update/result",
                  "$hw/events/device/elsewhere/twin/update",
                  {"event_id": "u2", "twin": {"humidity": {"actual": {"value": "1"}}}},
                  retry_404=False)
    assert ans["code"] == 404
    assert "twins" not in (cluster.device("elsewhere").get("status") or {})


class Readings:
    """A mapper publishing temperature and humidity at 10 Hz (paho, reconnecting by itself).
    `last`: the newest value of each property the twin answered (twin/update/result comes
    after the twin persisted it; a reading never answered may be lost with the agent)."""

    TOPIC = "$hw/events/device/default/thermo/twin/update"

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="readings")
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda cl, *_: cl.subscribe(self.TOPIC + "/result", qos=1)
        self.client.on_message = self._answered
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        self.n = 0
        self.props = ["temperature", "humidity"]
        self.sent: dict[str, dict[str, str]] = {}
        self.answered: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _answered(self, _c, _u, msg) -> None:
        self.answered.append(json.loads(msg.payload).get("event_id", ""))

    @property
    def last(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for event_id in sorted((e for e in self.answered if e in self.sent),
                               key=lambda e: int(e[1:])):
            out.update(self.sent[event_id])
        return out

    def all_answered(self) -> bool:
        return set(self.sent) <= set(self.answered)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.client.is_connected() and self.props:
                self.n += 1
                event_id = f"r{self.n}"
                self.sent[event_id] = {p: str(self.n) for p in self.props}
                twin = {p: {"actual": {"value": str(self.n)}} for p in self.props}
                self.client.publish(self.TOPIC, json.dumps({"event_id": event_id, "twin": twin}),
                                    qos=1)
            time.sleep(0.1)

    def forget_unanswered(self) -> None:
        """Readings the killed agent never answered: lost with it, as KubeEdge's are."""
        self.sent = {e: v for e, v in self.sent.items() if e in self.answered}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()


def test_agent_killed_and_server_stopped_lose_nothing(cluster):
    c = cluster
    readings = Readings(c.mqtt_port)
    try:
        wait_for(lambda: len(readings.answered) >= 10, 15, 0.1, "readings answered")
        c.srv.stop()  # the server is away: the agent holds the reports
        n = readings.n
        wait_for(lambda: readings.n >= n + 15, 10, 0.1, "readings while the server is away")
        readings.props = ["humidity"]  # humidity's last value is taken while it is away
        wait_for(lambda: readings.n >= n + 20, 10, 0.1, "humidity-only readings")
        readings.props = []
        wait_for(readings.all_answered, 10, 0.1, "every reading answered")
        humidity = readings.last["humidity"]
        c.stop_agent(signal.SIGKILL)  # its held reports are in meta.db only
        c.srv.start()
        c.start_agent()
        readings.props = ["temperature"]
        n = readings.n
        wait_for(lambda: readings.n >= n + 20, 60, 0.1, "readings after the restart")
        readings.props = []
        wait_for(readings.all_answered, 10, 0.1, "every reading answered")
    finally:
        readings.stop()
    last = readings.last
    assert last["humidity"] == humidity and int(last["temperature"]) > int(humidity)
    wait_for(lambda: c.reported("thermo") == {"temperature": last["temperature"],
                                              "humidity": humidity}, 30, 0.3,
             f"the latest values {last} in the status")
    twins = c.device("thermo")["status"]["twins"]
    assert sorted(t["propertyName"] for t in twins) == ["humidity", "temperature"]
