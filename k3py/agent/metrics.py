"""The node's resource usage for `kubectl top` and the HPA, as the kubelet's summary gives it
to metrics-server: every --metrics-resolution, /proc for the node and podman's container stats
(libpod API) for the pods; CPU as the rate between two samples, memory as sampled now.

Started and stopped by k3py.agent.main; each report goes up live (a stale window is worth
nothing after a reconnect: never queued in meta.db), as a UsageReport of k3py.tunnel.protocol.
The rates are `CpuRates`', pure and unit-tested."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

from k3py.agent.runtime.libpod import LibpodAPI
from k3py.agent.runtime.podman import (
    LABEL_CONTAINER,
    LABEL_NAME,
    LABEL_NS,
    LABEL_UID,
    RuntimeError_,
)
from k3py.aio import cancel_and_wait
from k3py.tunnel.message import EDGE, GROUP_RESOURCE, OP_UPDATE, Message, new_message
from k3py.tunnel.protocol import PodUsage, Usage, UsageReport, metrics_resource

__all__ = ["CpuRates", "MetricsReporter", "node_cpu_ns", "node_memory_bytes"]

log = logging.getLogger("k3py.metrics")

NODE_KEY = ""  # the node's own counter in CpuRates


class CpuRates:
    """Nanocores between the last two samples of cumulative CPU-time counters, per key."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}  # key -> (cpu ns, wall ns)

    def rate(self, key: str, cpu_ns: int, wall_ns: int) -> int | None:
        """None for a first sample, or when the counter went back (a restarted container)."""
        prev = self._last.get(key)
        self._last[key] = (cpu_ns, wall_ns)
        if prev is None or wall_ns <= prev[1] or cpu_ns < prev[0]:
            return None
        return round((cpu_ns - prev[0]) * 1_000_000_000 / (wall_ns - prev[1]))

    def window(self, key: str, wall_ns: int) -> float | None:
        """Seconds since `key`'s previous sample (before `rate` records the new one)."""
        prev = self._last.get(key)
        return (wall_ns - prev[1]) / 1e9 if prev is not None and wall_ns > prev[1] else None

    def keep(self, keys: set[str]) -> None:
        """Forget the counters of containers that are gone."""
        for key in [k for k in self._last if k not in keys and k != NODE_KEY]:
            del self._last[key]


def node_cpu_ns(stat: str) -> int:
    """CPU time spent busy by all CPUs (ns), from /proc/stat's first line: every field but
    idle and iowait, as the kubelet's node usage counts it."""
    fields = stat.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        raise ValueError("not /proc/stat")
    ticks = [int(x) for x in fields[1:]]
    busy = sum(ticks[:8]) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)  # no guest twice
    return busy * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def node_memory_bytes(meminfo: str) -> int:
    """MemTotal - MemAvailable: the node's working set without reclaimable page cache."""
    values = {}
    for line in meminfo.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[key] = int(parts[0]) * 1024
    return max(0, values.get("MemTotal", 0) - values.get("MemAvailable", 0))


def _read(path: str) -> str:
    with open(path) as f:  # /proc files: no disk behind them, short reads
        return f.read()


class MetricsReporter:
    """Samples every `resolution` seconds and sends a report when there are rates."""

    def __init__(self, runtime: LibpodAPI, node_name: str, resolution: float,
                 send_live: Callable[[Message], bool]) -> None:
        self.runtime = runtime
        self.node_name = node_name
        self.resolution = resolution
        self.send_live = send_live
        self.rates = CpuRates()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="metrics")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        while True:
            try:
                report = await self.sample()
            except (OSError, ValueError, RuntimeError_) as e:
                log.debug("usage sample failed: %s", e)
            else:
                if report is not None:
                    self.send_live(new_message(
                        source=EDGE, group=GROUP_RESOURCE, operation=OP_UPDATE,
                        resource=metrics_resource(self.node_name),
                        content=report.to_content()))
            await asyncio.sleep(self.resolution)

    async def sample(self) -> UsageReport | None:
        """One sample; a report once there was an earlier one to take rates against."""
        containers = [c for c in await self.runtime.list_containers()
                      if (c.get("Labels") or {}).get(LABEL_CONTAINER)]
        stats = await self.runtime.container_stats()
        now = time.time_ns()
        window = self.rates.window(NODE_KEY, now)
        node_cpu = self.rates.rate(NODE_KEY, node_cpu_ns(_read("/proc/stat")), now)
        memory = node_memory_bytes(_read("/proc/meminfo"))
        pods: dict[str, PodUsage] = {}
        seen = set()
        for c in containers:
            s = stats.get(c.get("Id") or "")
            if s is None:
                continue  # not running
            seen.add(c["Id"])
            cpu = self.rates.rate(c["Id"], int(s.get("CPUNano") or 0),
                                  int(s.get("SystemNano") or 0))
            if cpu is None:
                continue
            labels = c["Labels"]
            pod = pods.setdefault(labels[LABEL_UID], PodUsage(
                labels.get(LABEL_NS, ""), labels.get(LABEL_NAME, ""), labels[LABEL_UID]))
            pod.containers[labels[LABEL_CONTAINER]] = Usage(cpu, int(s.get("MemUsage") or 0))
        self.rates.keep(seen)
        if node_cpu is None or window is None:
            return None
        return UsageReport(now / 1e9, window, Usage(node_cpu, memory),
                           tuple(p for p in pods.values() if p.namespace and p.name))
