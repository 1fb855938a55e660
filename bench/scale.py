"""How far one server goes: one `k3py server` (embedded SQLite, no agent of its own) with N
hollow nodes (bench/hollow.py: the real join, tunnel and heartbeats, pods reported Running with
no container), in a second process on the same machine.

For each size: seconds until N nodes are Ready, the server's RSS (idle, with N nodes, with the
pods), the heartbeats it takes (lease + status writes/s over a steady window, against the
N x 2 / 10 s the agents send: its ratio) and its CPU meanwhile, the oldest node Lease at the
end, for N x --pods-per-node pods created at concurrency 16, create -> Running p50/p99, and
after a server restart, the seconds until every node's tunnel is back.
With two sizes, `ratio:` lines compare the larger to the smaller (RSS per node, p99).

Run: python3 bench/scale.py --nodes 100 --nodes 1000 [--pods-per-node 1] [--timeout 600].
Every phase is bounded by --timeout; traffic goes only to 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import client_ssl, emit, pct, rss_mb  # noqa: E402
from bench.hollow import HollowFleet  # noqa: E402
from tests.harness import ServerProcess  # noqa: E402

CONCURRENCY = 16
JSON = {"Content-Type": "application/json"}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _wait(pred, timeout: float, what: str, interval: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = await pred()
        if value:
            return value
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class Api:
    def __init__(self, srv: ServerProcess, session: aiohttp.ClientSession) -> None:
        self.base = srv.url
        self.s = session

    async def get(self, path: str) -> dict:
        async with self.s.get(self.base + path) as r:
            if r.status != 200:
                raise RuntimeError(f"GET {path} -> {r.status}")
            return orjson.loads(await r.read())

    async def revision(self) -> int:
        got = await self.get("/api/v1/namespaces?limit=1")
        return int(got["metadata"]["resourceVersion"])

    async def ready_nodes(self) -> int:
        nodes = (await self.get("/api/v1/nodes"))["items"]
        return sum(any(c["type"] == "Ready" and c["status"] == "True"
                       for c in (n.get("status") or {}).get("conditions") or [])
                   for n in nodes)

    async def oldest_lease_age(self) -> float:
        leases = (await self.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/"
                                 "leases"))["items"]
        now = time.time()
        ages = [now - _epoch(ls["spec"]["renewTime"]) for ls in leases
                if (ls.get("spec") or {}).get("renewTime")]
        return max(ages) if ages else float("nan")


def _epoch(stamp: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def pod(name: str) -> bytes:
    return orjson.dumps({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": name, "labels": {"bench": "scale"}},
                         "spec": {"containers": [{"name": "c", "image": "busybox",
                                                  "command": ["sleep", "3600"]}]}})


async def pods_to_running(api: Api, count: int, timeout: float) -> tuple[list[float], float]:
    """Create `count` pods at concurrency 16; (create -> Running seconds each, wall seconds)."""
    created: dict[str, float] = {}
    running: dict[str, float] = {}
    ns = "/api/v1/namespaces/default/pods"
    rv = str(await api.revision())
    done = asyncio.Event()

    async def watch() -> None:
        async with api.s.get(f"{api.base}{ns}?watch=1&resourceVersion={rv}&labelSelector="
                             f"bench%3Dscale", timeout=aiohttp.ClientTimeout(total=None)) as r:
            async for line in r.content:
                ev = json.loads(line)
                obj = ev.get("object") or {}
                name = (obj.get("metadata") or {}).get("name")
                if (obj.get("status") or {}).get("phase") == "Running" and name not in running:
                    running[name] = time.monotonic()
                    if len(running) >= count:
                        done.set()
                        return

    watcher = asyncio.create_task(watch())
    names = iter(f"p-{i:05d}" for i in range(count))
    t0 = time.monotonic()

    async def creator() -> None:
        for name in names:
            created[name] = time.monotonic()
            async with api.s.post(api.base + ns, data=pod(name), headers=JSON) as r:
                await r.read()
                if r.status != 201:
                    raise RuntimeError(f"create {name} -> {r.status}")
    try:
        await asyncio.gather(*(creator() for _ in range(CONCURRENCY)))
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        raise TimeoutError(f"only {len(running)} of {count} pods Running after "
                           f"{timeout:.0f} s") from None
    finally:
        watcher.cancel()
    return [running[n] - created[n] for n in running if n in created], time.monotonic() - t0


async def one_size(nodes: int, pods_per_node: int, timeout: float, window: float,
                   tmp: Path) -> dict:
    srv = ServerProcess(tmp / f"server-{nodes}")
    srv.start(timeout=60)
    fleet = HollowFleet(nodes, srv.url, srv.join_token(), tmp / f"nodes-{nodes}")
    out: dict[str, float] = {}
    ctx = client_ssl(srv.kubeconfig, tmp)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=0)) as s:
            api = Api(srv, s)
            await asyncio.sleep(2)
            out["rss_idle"] = rss_mb(srv.proc.pid)
            t0 = time.monotonic()
            await asyncio.wait_for(fleet.start(), timeout)
            await _wait(lambda: _at_least(api.ready_nodes(), nodes), timeout, f"{nodes} nodes "
                        f"Ready", 1.0)
            out["nodes_ready"] = time.monotonic() - t0
            await asyncio.sleep(min(5.0, window))  # registrations settle
            rev0, cpu0, w0 = await api.revision(), cpu_seconds(srv.proc.pid), time.monotonic()
            await asyncio.sleep(window)
            rev1, cpu1, w1 = await api.revision(), cpu_seconds(srv.proc.pid), time.monotonic()
            out["heartbeat_writes"] = (rev1 - rev0) / (w1 - w0)
            out["heartbeat_cpu"] = 100 * (cpu1 - cpu0) / (w1 - w0)
            out["rss_nodes"] = rss_mb(srv.proc.pid)
            out["lease_age_max"] = await api.oldest_lease_age()
            out["connected"] = fleet.connected()
            lat, wall = await pods_to_running(api, nodes * pods_per_node, timeout)
            out["pods"] = len(lat)
            out["pod_p50"], out["pod_p99"] = pct(lat, 50), pct(lat, 99)
            out["pods_per_s"] = len(lat) / wall
            out["rss_pods"] = rss_mb(srv.proc.pid)
            out["reconnect"] = await reconnect_after_restart(srv, fleet, timeout)
    finally:
        await fleet.stop()
        srv.stop()
    return out


async def reconnect_after_restart(srv: ServerProcess, fleet: HollowFleet,
                                  timeout: float) -> float:
    """Restart the server (SIGTERM, then the same data dir and port): seconds from its
    /readyz until every hollow node's tunnel is connected again."""
    srv.stop()
    await _wait(lambda: _done(fleet.connected() == 0), timeout, "every tunnel down", 0.2)
    await asyncio.to_thread(srv.start, True, 60.0)
    t0 = time.monotonic()
    await _wait(lambda: _done(fleet.connected() == fleet.count), timeout,
                f"{fleet.count} tunnels back", 0.2)
    return time.monotonic() - t0


async def _done(value: bool) -> bool:
    return value


async def _at_least(value, n: int) -> bool:
    return (await value) >= n


def report(nodes: int, r: dict) -> None:
    p = f"n{nodes}_"
    emit(p + "nodes_ready", r["nodes_ready"], "s")
    emit(p + "nodes_connected", r["connected"], "nodes")
    emit(p + "server_rss_idle", r["rss_idle"], "MB")
    emit(p + "server_rss_nodes", r["rss_nodes"], "MB")
    emit(p + "server_rss_per_node", (r["rss_nodes"] - r["rss_idle"]) * 1024 / nodes, "KB")
    expected = nodes * 2 / 10.0  # each agent: a lease renewal and a status every 10 s
    emit(p + "heartbeat_writes", r["heartbeat_writes"], "writes/s")
    print(f"ratio: {r['heartbeat_writes'] / expected:.2f}   (heartbeat writes stored / sent by "
          f"the {nodes} nodes, {expected:.0f}/s)", flush=True)
    emit(p + "heartbeat_server_cpu", r["heartbeat_cpu"], "%")
    emit(p + "node_lease_age_max", r["lease_age_max"], "s", "< 40 s")
    emit(p + "pods_running", r["pods"], "pods")
    emit(p + "pod_create_to_running_p50", r["pod_p50"], "s")
    emit(p + "pod_create_to_running_p99", r["pod_p99"], "s")
    emit(p + "pods_running_per_s", r["pods_per_s"], "pods/s")
    emit(p + "server_rss_pods", r["rss_pods"], "MB")
    emit(p + "reconnect_after_restart", r["reconnect"], "s", "< 60 s")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, action="append", help="a size (repeatable)")
    ap.add_argument("--pods-per-node", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600, help="bound of each phase (s)")
    ap.add_argument("--window", type=float, default=20,
                    help="seconds of steady heartbeats measured")
    args = ap.parse_args()
    # the hollow agents' reconnect warnings during the restart are expected: figures only
    logging.basicConfig(level=logging.ERROR)
    sizes = sorted(args.nodes or [100])
    results = {}
    with tempfile.TemporaryDirectory(prefix="k3py-scale-") as d:
        for n in sizes:
            results[n] = asyncio.run(one_size(n, args.pods_per_node, args.timeout, args.window,
                                              Path(d)))
            report(n, results[n])
    if len(sizes) > 1:
        small, big = results[sizes[0]], results[sizes[-1]]
        per = [(r["rss_nodes"] - r["rss_idle"]) / n for n, r in ((sizes[0], small),
                                                              (sizes[-1], big))]
        print(f"ratio: {per[1] / per[0]:.2f}   (server RSS per node, {sizes[-1]} / {sizes[0]} "
              f"nodes)")
        print(f"ratio: {big['pod_p99'] / small['pod_p99']:.2f}   (pod create -> Running p99, "
              f"{sizes[-1]} / {sizes[0]} nodes)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
