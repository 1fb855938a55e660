"""A device's readings across a 30 s cut of its node's link: the agent runs in a network
namespace with a mapper beside it (paho, 10 Hz, on the node's own broker), the link goes down,
the agent is SIGKILLed and started again during the cut, and once the link is back the Device
status holds the latest value of every property the twin acknowledged, each property once."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.harness import ServerProcess, clean_env, free_port, wait_for
from tests.integration.agents import remove_podman_pods, stop_proc
from tests.integration.netns import netns_factory  # noqa: F401 - fixture
from tests.integration.test_devices_twin import THERMO_MODEL, V1BETA1

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("mosquitto_pub") is None,
                                 reason="needs mosquitto-clients (scripts/setup.sh)")]

ROOT = Path(__file__).resolve().parents[2]
CUT_SECONDS = 30.0

# The mapper, run inside the namespace: publishes both properties with the reading's number at
# 10 Hz while `<dir>/publish` exists, logs `sent N` and `answered N` (the twin's result comes
# after it persisted the reading) to `<dir>/log`, reconnecting by itself.
MAPPER = r"""
import json, os, sys, time
import paho.mqtt.client as mqtt
port, d = int(sys.argv[1]), sys.argv[2]
topic = "$hw/events/device/default/thermo/twin/update"
log = open(os.path.join(d, "log"), "a", buffering=1)
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cut-mapper")
c.reconnect_delay_set(1, 2)
c.on_connect = lambda cl, *_: cl.subscribe(topic + "/result", qos=1)
c.on_message = lambda cl, u, m: log.write(
    "answered %s\n" % json.loads(m.payload).get("event_id", "")[1:])
c.connect_async("127.0.0.1", port)
c.loop_start()
n = 0
while not os.path.exists(os.path.join(d, "stop")):
    if c.is_connected() and os.path.exists(os.path.join(d, "publish")):
        n += 1
        twin = {p: {"actual": {"value": str(n)}} for p in ("temperature", "humidity")}
        log.write("sent %d\n" % n)
        c.publish(topic, json.dumps({"event_id": "r%d" % n, "twin": twin}), qos=1)
    time.sleep(0.1)
c.disconnect()
c.loop_stop()
"""


class Mapper:
    def __init__(self, ns, port: int, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "publish").touch()
        self.proc = ns.popen([sys.executable, "-c", MAPPER, str(port), str(self.dir)],
                             env=clean_env(), cwd=str(ROOT))

    def _lines(self, kind: str) -> list[int]:
        path = self.dir / "log"
        text = path.read_text() if path.exists() else ""
        return [int(x.split()[1]) for x in text.splitlines()
                if x.startswith(kind + " ") and x.split()[1].isdigit()]

    def sent(self) -> list[int]:
        return self._lines("sent")

    def answered(self) -> list[int]:
        return self._lines("answered")

    def pause(self) -> None:
        (self.dir / "publish").unlink(missing_ok=True)

    def stop(self) -> None:
        (self.dir / "stop").touch()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_readings_across_a_link_cut_and_an_agent_restart(netns_factory, tmp_path):  # noqa: F811
    ns = netns_factory()
    node = f"cut-{uuid.uuid4().hex[:6]}"
    mqtt_port = free_port()
    srv = ServerProcess(tmp_path / "server", extra_args=[
        "--bind-address", "0.0.0.0", "--advertise-address", ns.host_ip])
    agent_log = tmp_path / "agent.log"
    agent: list[subprocess.Popen] = []

    def start_agent() -> None:
        with open(agent_log, "ab") as log:
            agent.append(ns.popen(
                srv.agent_command(tmp_path / "agent", node, "--mqtt-port", str(mqtt_port),
                                  "--device-offline-after", "120s",
                                  server=f"https://{ns.host_ip}:{srv.port}"),
                stdout=log, stderr=subprocess.STDOUT, env=clean_env(), cwd=str(ROOT)))

    def reported() -> dict[str, str]:
        dev = srv.kubectl_json("get", "device", "thermo")
        return {t["propertyName"]: t["reported"]["value"]
                for t in (dev.get("status") or {}).get("twins") or [] if "reported" in t}

    mapper: Mapper | None = None
    try:
        srv.start()
        start_agent()
        wait_for(lambda: srv.kubectl("get", "devices", check=False).returncode == 0, 30, 0.2,
                 "devices served")
        for manifest in (THERMO_MODEL, V1BETA1.replace("NODE", node)):
            srv.kubectl("apply", "-f", "-", input=manifest)
        wait_for(lambda: b"MQTT broker listening" in agent_log.read_bytes(), 60, 0.2,
                 "the agent's broker")
        mapper = Mapper(ns, mqtt_port, tmp_path / "mapper")
        wait_for(lambda: len(mapper.answered()) >= 10 and reported(), 30, 0.2,
                 "readings in the status before the cut")

        ns.cut()
        cut_at = time.monotonic()
        wait_for(lambda: len(mapper.answered()) >= 60, 15, 0.2, "readings during the cut")
        agent[-1].send_signal(signal.SIGKILL)  # what it holds for the server is in meta.db only
        agent[-1].wait(10)
        start_agent()
        time.sleep(max(0.0, CUT_SECONDS - (time.monotonic() - cut_at)))  # the cut's length
        ns.restore()

        before = len(mapper.sent())
        wait_for(lambda: len(mapper.sent()) >= before + 20, 90, 0.2,
                 "readings after the link is back")
        mapper.pause()
        wait_for(lambda: max(mapper.answered(), default=0) == max(mapper.sent()), 15, 0.2,
                 "the last reading answered")
        latest = str(max(mapper.answered()))
        try:
            wait_for(lambda: reported() == {"temperature": latest, "humidity": latest}, 30, 0.3,
                     f"reading {latest} in the status")
        except TimeoutError as e:
            raise AssertionError(f"{e}; status {reported()}\n"
                                 + agent_log.read_text(errors="replace")[-3000:]) from None
        twins = srv.kubectl_json("get", "device", "thermo")["status"]["twins"]
        assert sorted(t["propertyName"] for t in twins) == ["humidity", "temperature"]
    finally:
        if mapper is not None:
            mapper.stop()
        for proc in agent:
            if proc.poll() is None:
                stop_proc(proc)
        srv.stop()
        remove_podman_pods(node)
