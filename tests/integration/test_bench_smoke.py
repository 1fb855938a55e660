"""bench/devices.py (5 devices, 3 s) and bench/scale.py (10 hollow nodes) run end to end at a
tiny size and print only lines the conventions allow: `name: value unit` figures and
`ratio: x`. No timing is asserted here."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import clean_env

pytestmark = pytest.mark.integration
needs_mosquitto = pytest.mark.skipif(shutil.which("mosquitto_pub") is None
                                     or shutil.which("mosquitto") is None,
                                     reason="needs mosquitto and mosquitto-clients "
                                            "(scripts/setup.sh)")

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^([a-z][a-z0-9_]*): (-?[0-9]+(?:\.[0-9]+)?|nan)(?: (.*))?$")
FIGURES = ("publish_to_status_p99", "device_status_writes", "agent_rss_peak",
           "desired_patch_to_document_p99", "amqtt_qos0", "mosquitto_qos0", "amqtt_qos1",
           "mosquitto_qos1")


def _figures(stdout: str) -> tuple[dict[str, float], int]:
    """The `name: value` figures printed, and how many `ratio:` lines."""
    figures: dict[str, float] = {}
    ratios = 0
    for line in stdout.splitlines():
        m = LINE.match(line)
        assert m, f"not a `name: value unit` line: {line!r}"
        if m.group(1) == "ratio":
            ratios += 1
        else:
            figures[m.group(1)] = float(m.group(2))
    return figures, ratios


@needs_mosquitto
def test_devices_bench_prints_its_figures() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "devices.py"), "--devices", "5",
                          "--seconds", "3", "--patches", "3", "--kubectl-patches", "1",
                          "--broker-messages", "500"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env=clean_env())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    figures, ratios = _figures(out.stdout)
    assert set(FIGURES) <= set(figures), sorted(figures)
    assert ratios == 3  # status writes / limit, amqtt / mosquitto at QoS 0 and 1
    assert figures["devices"] == 5
    assert figures["readings_never_shown"] == 0 and figures["desired_values_missing"] == 0


def test_scale_bench_with_ten_hollow_nodes() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--nodes", "10",
                          "--window", "2", "--timeout", "60"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env=clean_env())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    figures, ratios = _figures(out.stdout)
    assert figures["n10_nodes_connected"] == 10 and figures["n10_pods_running"] == 10, figures
    assert {"n10_server_rss_nodes", "n10_heartbeat_writes", "n10_pod_create_to_running_p99",
            "n10_reconnect_after_restart"} \
        <= set(figures)
    assert ratios == 1  # heartbeat writes stored / sent
