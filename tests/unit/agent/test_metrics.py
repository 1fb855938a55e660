"""The agent's usage sampling without podman: CPU rates between two samples of cumulative
counters, the node's busy time from /proc/stat and its working set from /proc/meminfo."""

from __future__ import annotations

import os

import pytest

from k3py.agent.metrics import CpuRates, node_cpu_ns, node_memory_bytes

pytestmark = pytest.mark.unit


def test_rates_need_two_samples_and_survive_a_restarted_counter():
    rates = CpuRates()
    assert rates.rate("c", 1_000, 10 ** 9) is None
    assert rates.window("c", 3 * 10 ** 9) == 2.0
    # half a core for two seconds: 1 s of CPU time
    assert rates.rate("c", 1_000 + 10 ** 9, 3 * 10 ** 9) == 500_000_000
    assert rates.rate("c", 5, 4 * 10 ** 9) is None, "a restarted container starts over"
    assert rates.rate("c", 5 + 10 ** 8, 5 * 10 ** 9) == 100_000_000
    rates.keep(set())
    assert rates.rate("c", 10 ** 9, 6 * 10 ** 9) is None, "forgotten when gone"


def test_node_busy_time_and_working_set_from_proc():
    hz = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat = "cpu  100 5 20 1000 50 1 2 3 7 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n"
    assert node_cpu_ns(stat) == (100 + 5 + 20 + 1 + 2 + 3) * 10 ** 9 // hz
    with pytest.raises(ValueError):
        node_cpu_ns("intr 1 2 3")
    meminfo = "MemTotal:  2048 kB\nMemFree:  100 kB\nMemAvailable:  1024 kB\n"
    assert node_memory_bytes(meminfo) == 1024 * 1024
