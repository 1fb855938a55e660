"""examples/temperature/run.sh --simulated for real on a one-machine k3py: the DeviceModel and
Device `temperature`, the simulated mapper pod on the edge node, and run.sh's final
`kubectl get device temperature -o yaml -w` showing the reported `temperature-status` as the
upstream demo's mapper writes it ("23.4C"). The DHT11 mapper's own manifest (privileged,
/dev/gpiomem) is checked by the API server with a server-side dry run: no Pi here. Then the same
on a server plus a joined agent: the mapper and the Device on the agent's node (EDGE_NODE), its
readings through the agent's broker."""

from __future__ import annotations

import os
import queue
import re
import signal
import threading

import pytest

from tests.e2e.demos import ROOT, demo_cluster, server_and_agent

pytestmark = pytest.mark.integration

VALUE = re.compile(r"""value: ["']?(\d+(\.\d+)?C)["']?\s*$""")


def _lines(proc) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)
    threading.Thread(target=pump, daemon=True).start()
    return lines


def _run_and_check(srv, edge: str, mqtt_port: int, **env: str) -> None:
    """run.sh --simulated with `env`: the mapper on node `edge`, its broker at `mqtt_port`."""
    # the Pi's manifest, as run.sh renders it, is one the API accepts
    manifest = (ROOT / "examples" / "temperature" / "mapper.yaml").read_text()
    manifest = manifest.replace("edge-node", edge).replace(
        "127.0.0.1:1883", f"127.0.0.1:{mqtt_port}")
    dry = srv.kubectl("apply", "--dry-run=server", "-f", "-", input=manifest)
    assert "deployment.apps/temperature-mapper created (server dry run)" in dry.stdout
    assert not srv.kubectl_json("get", "deployments")["items"]
    proc = srv.popen_run_sh("temperature", "--simulated", **env)
    seen = ""
    try:
        lines = _lines(proc)
        value = None
        while value is None:
            line = lines.get(timeout=90)
            assert line is not None, f"run.sh ended:\n{seen}\n{proc.stderr.read()}"
            seen += line
            if "temperature-status" in seen and VALUE.search(line):
                value = VALUE.search(line).group(1)
    except queue.Empty:
        raise AssertionError(f"no reported temperature in 90 s:\n{seen}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    assert re.search(r"\s1/1\s+Running\s", seen), seen
    assert "kind: Device" in seen and "name: temperature" in seen, seen
    dev = srv.kubectl_json("get", "device", "temperature")
    terms = dev["spec"]["nodeSelector"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == [edge]
    twins = {t["propertyName"]: t for t in dev["status"]["twins"]}
    assert re.fullmatch(r"\d+(\.\d)?C", twins["temperature-status"]["reported"]["value"])
    pod = srv.kubectl_json("get", "pods", "-l", "app=temperature-mapper")["items"][0]
    assert pod["spec"]["nodeName"] == edge
    assert pod["spec"]["containers"][0]["args"][:2] == ["mapper", "simulated"]
    assert f"tcp://127.0.0.1:{mqtt_port}" in pod["spec"]["containers"][0]["args"]


def test_temperature_run_sh_simulated(tmp_path, mapper_image):
    with demo_cluster(tmp_path, "tp", mapper_image) as srv:
        _run_and_check(srv, srv.node, srv.mqtt_port)


def test_temperature_run_sh_simulated_server_and_joined_agent(tmp_path, mapper_image):
    with server_and_agent(tmp_path, "t", mapper_image) as (srv, agent):
        _run_and_check(srv, agent.node, agent.mqtt_port, **agent.run_env())
