"""bench/devices.py (5 devices, 3 s), bench/scale.py (10 hollow nodes), bench/network.py
(10 Services, 1 s rounds), bench/dashboard_cut.py (one cut) and bench/watchselect.py (300
pods) run end to end at a tiny size
and print only lines the conventions allow: `name: value unit` figures and `ratio: x`. No
timing is asserted here."""

from __future__ import annotations

import os
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


def bench_lines(out: subprocess.CompletedProcess) -> tuple[dict[str, float], int]:
    """The figures a bench printed and its number of `ratio:` lines; every line is one."""
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    figures: dict[str, float] = {}
    ratios = 0
    for line in out.stdout.splitlines():
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
    figures, ratios = bench_lines(out)
    assert set(FIGURES) <= set(figures), sorted(figures)
    assert ratios == 3  # status writes / limit, amqtt / mosquitto at QoS 0 and 1
    assert figures["devices"] == 5
    assert figures["readings_never_shown"] == 0 and figures["desired_values_missing"] == 0


def test_scale_bench_with_ten_hollow_nodes() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--nodes", "10",
                          "--window", "2", "--timeout", "60"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env=clean_env())
    figures, ratios = bench_lines(out)
    assert figures["n10_sqlite_nodes_connected"] == 10 \
        and figures["n10_sqlite_pods_running"] == 10, figures
    assert {"n10_sqlite_server_rss_nodes", "n10_sqlite_heartbeat_writes",
            "n10_sqlite_pods_scheduled_per_s", "n10_sqlite_api_get_p99",
            "n10_sqlite_api_list_p99", "n10_sqlite_api_create_p99",
            "n10_sqlite_api_get_p50", "n10_sqlite_api_list_p50", "n10_sqlite_api_create_p50",
            "n10_sqlite_reconnect_after_restart"} <= set(figures)
    assert ratios == 1  # heartbeat writes stored / sent


def test_watchselect_bench_with_300_pods() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "watchselect.py"), "--pods",
                          "300", "--repeat", "1"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT, env=clean_env())
    figures, ratios = bench_lines(out)
    assert figures["events"] == 900
    assert {"w4_selecting_us_per_event_remembered", "w4_selecting_us_per_event_none_remembered",
            "label_memo_bytes_per_entry"} <= set(figures)
    assert ratios == 1  # remembered / none remembered


NETWORK_FIGURES = ("agent_extra_rss", "http_pod_ip_rate", "http_cluster_ip_rate",
                   "http_cluster_ip_p99", "dns_dnsmasq_rate", "dns_node_dns_rate",
                   "dns_node_dns_p99")


@pytest.mark.skipif(shutil.which("dnsmasq") is None or shutil.which("nft") is None
                    or os.geteuid() != 0,
                    reason="needs root, nft and dnsmasq (scripts/setup.sh)")
def test_network_bench_prints_its_figures() -> None:
    """bench/network.py at a tiny size (10 Services, 1 s rounds): every line a figure or a
    ratio, and the requests and queries all answered right."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "network.py"), "--services",
                          "10", "--endpoints", "40", "--seconds", "1", "--rounds", "1",
                          "--settle", "0.5", "--tunnel-mib", "8"], capture_output=True,
                         text=True, timeout=180,
                         cwd=ROOT, env=clean_env())
    figures, ratios = bench_lines(out)
    assert set(NETWORK_FIGURES) <= set(figures), sorted(figures)
    assert ratios == 8  # RSS / target, HTTP req/s and p99, DNS queries/s and p99, tunnel
    # req/s and p99 and bulk MB/s (two agents in netns: route vs tunnel)
    assert figures["services"] == 10
    assert all(figures[f"{kind}_errors"] == 0 for kind in (
        "http_pod_ip", "http_cluster_ip", "dns_dnsmasq", "dns_node_dns")), figures


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (`ip netns`)")
def test_dashboard_cut_bench_with_one_cut() -> None:
    """bench/dashboard_cut.py with one cut: the page's figure, the server's and what the page
    adds, each line a figure or a ratio."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "dashboard_cut.py"), "--cuts",
                          "1"], capture_output=True, text=True, timeout=240, cwd=ROOT,
                         env=clean_env())
    figures, ratios = bench_lines(out)
    assert {"cut_to_page_offline_max", "cut_to_server_offline_max",
            "page_added_max"} <= set(figures), sorted(figures)
    assert ratios == 2  # page / target, page / server
