"""The device event bus for real: the embedded amqtt broker on a free port, Debian's
mosquitto_pub/mosquitto_sub and paho-mqtt as the mappers and apps, `python -m k3py mapper
simulated|counter` as subprocesses. Every request topic in both id forms, the error answers,
desired values going out, coalesced reports, a broker crash, and the built-in mappers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from k3py.agent.devices.eventbus import EventBus
from k3py.agent.devices.twin import Device, DeviceTwins, Report, Twin
from tests.harness import free_port, wait_for

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("mosquitto_pub") is None,
                                 reason="needs mosquitto-clients (scripts/setup.sh)")]

ROOT = Path(__file__).resolve().parents[2]
LEGACY = "$hw/events/device/temperature/"
NEW = "$hw/events/device/default/temperature/"


class BusThread:
    """The event bus on its own event loop in a thread, so that the test can block on
    mosquitto_pub without blocking the broker."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reports: list[Report] = []
        self.persisted: list[str] = []
        self.twins = DeviceTwins("edge-1")
        self.twins.set_devices([
            Device("default", "temperature", twins={
                "temperature-status": Twin(optional=False), "humidity": Twin(type="int",
                                                                            optional=False)}),
            Device("default", "counter", twins={"status": Twin(optional=False)})])
        self.loop = asyncio.new_event_loop()
        self.bus: EventBus | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _up(self, reports: list[Report]) -> None:
        self.reports.extend(reports)

    async def _persist(self, devices: list[Device]) -> None:
        self.persisted.extend(d.name for d in devices)

    async def _start(self) -> None:
        self.bus = EventBus(self.twins, port=self.port, on_report=self._up,
                            on_persist=self._persist)
        await self.bus.start()
        assert await self.bus.wait_connected(10)

    def run(self, coro, timeout: float = 15):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        self.run(self._start())

    def stop(self) -> None:
        if self.bus is not None:
            self.run(self.bus.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def set_desired(self, name: str, values: dict[str, str]) -> None:
        async def go() -> None:
            assert self.bus is not None
            await self.bus.apply(self.twins.set_desired("default", name, values))
        self.run(go())


@pytest.fixture
def bus():
    b = BusThread(free_port())
    try:
        b.start()
        yield b
    finally:
        b.stop()


class Watcher:
    """A paho-mqtt subscriber recording (topic, payload) pairs."""

    def __init__(self, port: int, *topics: str) -> None:
        self.messages: list[tuple[str, dict | str]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)

        def on_connect(c, _u, _f, _r, _p):
            c.subscribe([(tp, 1) for tp in topics])

        def on_message(_c, _u, m):
            try:
                body: dict | str = json.loads(m.payload)
            except ValueError:
                body = m.payload.decode(errors="replace")
            self.messages.append((m.topic, body))

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscription not acknowledged"

    def on(self, topic: str) -> list:
        return [body for tp, body in self.messages if tp == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def watch(bus):
    made: list[Watcher] = []

    def make(*topics: str) -> Watcher:
        w = Watcher(bus.port, *topics)
        made.append(w)
        return w
    yield make
    for w in made:
        w.close()


def pub(port: int, topic: str, payload: str | dict) -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic,
                    "-m", text], check=True, timeout=10)


def update(value: str) -> dict:
    # the upstream temperature demo's payload, metadata type "Updated" included
    return {"event_id": "", "timestamp": 0, "twin": {
        "temperature-status": {"actual": {"value": value}, "metadata": {"type": "Updated"}}}}


@pytest.mark.parametrize("prefix", [LEGACY, NEW])
def test_twin_update_result_document_delta_and_report(bus, watch, prefix):
    w = watch("$hw/events/device/#")
    bus.set_desired("temperature", {"temperature-status": "30C"})
    pub(bus.port, prefix + "twin/update", update("24C"))
    wait_for(lambda: w.on(prefix + "twin/update/result"), 10, 0.05, "result")
    wait_for(lambda: len(w.on(NEW + "twin/update/delta")) >= 2, 10, 0.05, "delta")
    result = w.on(prefix + "twin/update/result")[0]
    assert result["twin"]["temperature-status"]["actual"]["value"] == "24C"
    assert "actual_version" not in json.dumps(w.messages)
    for form in (LEGACY, NEW):
        docs = [d for d in w.on(form + "twin/update/document") if "24C" in json.dumps(d)]
        assert docs and docs[0]["twin"]["temperature-status"]["current"]["actual"]["value"] \
            == "24C"
        assert w.on(form + "twin/update/delta")[-1]["delta"] == {"temperature-status": "30C"}
    wait_for(lambda: any("temperature-status" in r.twins for r in bus.reports), 10, 0.05,
             "report up")
    assert "temperature" in bus.persisted


@pytest.mark.parametrize("prefix", [LEGACY, NEW])
def test_twin_get_state_update_and_membership(bus, watch, prefix):
    w = watch("$hw/events/#")
    pub(bus.port, prefix + "twin/get", {"event_id": "g"})
    pub(bus.port, prefix + "state/update", {"event_id": "s", "state": "online"})
    pub(bus.port, "$hw/events/node/edge-1/membership/get", {"event_id": "m"})
    got = wait_for(lambda: w.on(prefix + "twin/get/result"), 10, 0.05, "twin/get/result")[0]
    assert got["event_id"] == "g" and set(got["twin"]) == {"temperature-status", "humidity"}
    state = wait_for(lambda: w.on(prefix + "state/update/result"), 10, 0.05, "state")[0]
    assert state["device"]["state"] == "online" and state["device"]["lastOnlineTime"]
    members = wait_for(lambda: w.on("$hw/events/node/edge-1/membership/get/result"), 10, 0.05,
                       "membership")[0]
    assert [d["name"] for d in members["devices"]] == ["counter", "temperature"]


def test_bad_input_is_answered_and_the_bus_keeps_going(bus, watch):
    w = watch("$hw/events/device/#")
    pub(bus.port, LEGACY + "twin/update", "this is not json")
    pub(bus.port, "$hw/events/device/nosuch/twin/update", update("1"))
    pub(bus.port, NEW + "twin/update", {"event_id": "k", "twin": {"bad key!": {}}})
    pub(bus.port, NEW + "twin/update", {"event_id": "v", "twin": {
        "humidity": {"actual": {"value": "wet"}}}})
    wait_for(lambda: len(w.on(NEW + "twin/update/result")) >= 2, 10, 0.05, "error answers")
    (bad_json,) = w.on(LEGACY + "twin/update/result")
    assert bad_json["code"] == 400 and set(bad_json) == {"event_id", "timestamp", "code",
                                                         "reason"}
    (missing,) = wait_for(lambda: w.on("$hw/events/device/nosuch/twin/update/result"), 10, 0.05,
                          "404")
    assert missing["code"] == 404
    key_err, value_err = w.on(NEW + "twin/update/result")
    assert (key_err["event_id"], key_err["code"]) == ("k", 400)
    assert value_err["reason"] == "the value is not int or integer"
    pub(bus.port, LEGACY + "twin/update", update("25C"))  # still serving
    wait_for(lambda: len(w.on(LEGACY + "twin/update/result")) == 2, 10, 0.05, "served again")


def test_desired_from_the_cloud_reaches_a_mapper_in_both_forms(bus, watch):
    w = watch(LEGACY + "twin/update/document", NEW + "twin/update/delta")
    bus.set_desired("counter", {"status": "ON"})
    bus.set_desired("temperature", {"humidity": "50"})
    wait_for(lambda: w.on(LEGACY + "twin/update/document"), 10, 0.05, "document")
    doc = w.on(LEGACY + "twin/update/document")[0]
    assert doc["twin"]["humidity"]["current"]["expected"]["value"] == "50"
    wait_for(lambda: w.on(NEW + "twin/update/delta"), 10, 0.05, "delta")
    assert w.on(NEW + "twin/update/delta")[0]["delta"] == {"humidity": "50"}


def test_reports_are_coalesced_per_device(bus):
    for n in range(20):  # 20 readings in well under a report cycle
        pub(bus.port, LEGACY + "twin/update", update(f"{n}C"))
    wait_for(lambda: any(r.twins.get("temperature-status") and
                         r.twins["temperature-status"].value == "19C" for r in bus.reports),
             10, 0.05, "latest value reported")
    time.sleep(1.2)  # a full report cycle: nothing else may arrive after the latest
    temp = [r for r in bus.reports if "temperature-status" in r.twins]
    assert temp[-1].twins["temperature-status"].value == "19C"
    assert len(temp) < 20 // 2


def test_a_crashed_broker_is_restarted(bus, watch):
    bus.run(bus.bus.broker.crash_for_test())
    wait_for(lambda: bus.bus.broker.restarts == 1 and bus.bus.broker.serving(), 10, 0.1,
             "broker restarted")
    assert bus.run(bus.bus.wait_connected(15))
    w = watch(LEGACY + "twin/update/result")
    pub(bus.port, LEGACY + "twin/update", update("26C"))
    wait_for(lambda: w.on(LEGACY + "twin/update/result"), 10, 0.05, "answer after restart")


def mapper(kind: str, port: int, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "k3py", "mapper", kind, "--broker",
                             f"tcp://127.0.0.1:{port}", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def test_simulated_mapper_publishes_twin_updates(bus, watch):
    w = watch(LEGACY + "twin/update", LEGACY + "state/update")
    proc = mapper("simulated", bus.port, "--device", "temperature", "--interval", "200ms",
                  "--seed", "3")
    try:
        wait_for(lambda: len(w.on(LEGACY + "twin/update")) >= 3, 20, 0.1, "three readings")
        assert w.on(LEGACY + "state/update")[0]["state"] == "online"
        first = w.on(LEGACY + "twin/update")[0]["twin"]
        assert first["temperature-status"]["actual"]["value"].endswith("C")
        assert first["humidity"]["metadata"]["type"] == "int"
        wait_for(lambda: any("humidity" in r.twins for r in bus.reports), 10, 0.1, "reported")
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    wait_for(lambda: w.on(LEGACY + "state/update")[-1]["state"] == "offline", 10, 0.1,
             "offline on exit")


def test_counter_mapper_follows_desired_on_and_off(bus, watch):
    topic = "$hw/events/device/counter/twin/update"
    w = watch(topic)
    proc = mapper("counter", bus.port, "--device", "counter", "--interval", "100ms")

    def counts() -> list[str]:
        return [m["twin"]["status"]["actual"]["value"] for m in w.on(topic)]
    try:
        wait_for(lambda: counts() == ["0"], 20, 0.1, "counter reports 0 while OFF")
        bus.set_desired("counter", {"status": "ON"})
        wait_for(lambda: len(counts()) >= 5, 10, 0.05, "counting")
        assert counts()[1:5] == ["1", "2", "3", "4"]
        bus.set_desired("counter", {"status": "OFF"})
        wait_for(lambda: counts()[-1] == "0", 10, 0.05, "reset to 0")
        n = len(counts())
        time.sleep(0.5)  # OFF: no more reports (five intervals)
        assert len(counts()) == n
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
