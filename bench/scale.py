"""How far one server goes: one `k3py server` (embedded SQLite, no agent of its own) with N
hollow nodes (bench/hollow.py: the real join, tunnel and heartbeats, pods reported Running with
no container), in a second process on the same machine.

For each size and datastore (SQLite, or PostgreSQL: a fresh local cluster, tests/pg.py, on the
same 2 cores): seconds until N nodes are Ready, the server's RSS (idle, with N nodes, with the
pods), the heartbeats it takes (lease + status writes/s over a steady window, against the
N x 2 / 10 s the agents send: its ratio) and its CPU meanwhile, the oldest node Lease; then
--pods pods made through Deployments of 100: pods scheduled/s and Running/s (from the first
Deployment create until the last pod; Running/s is nan, and pods_running says how many
ran, if not all ran within --timeout), the API's p99 for a GET, a LIST (limit=500) and a
CREATE meanwhile; and after a server restart, the seconds until every node's tunnel is back.
With two sizes, `ratio:` compares the server RSS per node; with both datastores, postgres /
sqlite for pods scheduled/s, the API p99s, RSS and reconnect time.

Run: python3 bench/scale.py --nodes 200 --pods 3000 --datastore sqlite --datastore postgres
[--timeout 600]. Every phase is bounded by --timeout; traffic goes only to 127.0.0.1."""

from __future__ import annotations

import argparse
import asyncio
import gc
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
from tests.pg import PostgresCluster  # noqa: E402

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


REPLICAS = 100  # pods per Deployment


def deployment(name: str, replicas: int) -> bytes:
    labels = {"bench": "scale", "app": name}
    return orjson.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"bench": "scale"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                     {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}}})


async def pods_through_deployments(api: Api, count: int, timeout: float) -> dict[str, float]:
    """`count` pods through Deployments of REPLICAS: seconds from the first create until all
    are scheduled and all Running, and the API's latencies (probe) meanwhile."""
    scheduled: set[str] = set()
    running: set[str] = set()
    marks: dict[str, float] = {}
    done = asyncio.Event()
    rv = str(await api.revision())

    async def watch() -> None:
        async with api.s.get(f"{api.base}/api/v1/namespaces/default/pods?watch=1&"
                             f"resourceVersion={rv}&labelSelector=bench%3Dscale",
                             timeout=aiohttp.ClientTimeout(total=None)) as r:
            async for line in r.content:
                obj = orjson.loads(line).get("object") or {}
                name = (obj.get("metadata") or {}).get("name")
                if (obj.get("spec") or {}).get("nodeName"):
                    scheduled.add(name)
                    if len(scheduled) == count:
                        marks.setdefault("scheduled", time.monotonic())
                if (obj.get("status") or {}).get("phase") == "Running":
                    running.add(name)
                    if len(running) == count:
                        marks["running"] = time.monotonic()
                        done.set()
                        return

    watcher = asyncio.create_task(watch())
    probe = ApiProbe(api)
    prober = asyncio.create_task(probe.run())
    t0 = time.monotonic()
    try:
        for i in range(0, count, REPLICAS):
            async with api.s.post(f"{api.base}/apis/apps/v1/namespaces/default/deployments",
                                  data=deployment(f"d-{i // REPLICAS:04d}",
                                                  min(REPLICAS, count - i)),
                                  headers=JSON) as r:
                if r.status != 201:
                    raise RuntimeError(f"create deployment -> {r.status}: {await r.text()}")
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        if "scheduled" not in marks:
            raise TimeoutError(f"only {len(scheduled)} scheduled and {len(running)} of "
                               f"{count} pods Running after {timeout:.0f} s") from None
        # all scheduled: the figures stand, with how many ran by the deadline
    finally:
        watcher.cancel()
        prober.cancel()
    return {"pods": count, "running": len(running), "scheduled_s": marks["scheduled"] - t0,
            "running_s": marks.get("running", float("nan")) - t0, **probe.p99()}


class ApiProbe:
    """A client's single-object GET, chunked LIST (kubectl's limit=500) and CREATE, one after
    the other every 50 ms, for the API latency while the pods are made."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.lat: dict[str, list[float]] = {"get": [], "list": [], "create": []}

    async def _timed(self, verb: str, method: str, path: str, body: bytes | None = None,
                     ok: int = 200) -> None:
        t = time.monotonic()
        async with self.api.s.request(method, self.api.base + path, data=body,
                                      headers=JSON) as r:
            await r.read()
            if r.status != ok:
                raise RuntimeError(f"{method} {path} -> {r.status}")
        self.lat[verb].append(time.monotonic() - t)

    async def run(self) -> None:
        ns = "/api/v1/namespaces/default"
        for i in range(10 ** 6):
            await self._timed("get", "GET", f"{ns}/configmaps/kube-root-ca.crt")
            await self._timed("list", "GET", f"{ns}/pods?limit=500")
            await self._timed("create", "POST", f"{ns}/configmaps", orjson.dumps({
                "metadata": {"name": f"probe-{i}"}, "data": {"k": "v"}}), 201)
            await asyncio.sleep(0.05)

    def p99(self) -> dict[str, float]:
        return {f"{verb}_p99": pct(v, 99) for verb, v in self.lat.items()}


async def one_run(datastore: str, nodes: int, pods: int, timeout: float, window: float,
                  tmp: Path) -> dict:
    """One server on `datastore` (sqlite, or postgres: a fresh local PostgreSQL), N hollow
    nodes, `pods` pods; the figures of one run."""
    pg = dsn = None
    if datastore == "postgres":
        pg = PostgresCluster().start()
        dsn = pg.create_db(f"scale{nodes}")
    srv = ServerProcess(tmp / f"server-{datastore}-{nodes}",
                        extra_args=["--datastore-endpoint", dsn] if dsn else [])
    try:
        srv.start(timeout=60)
        return await _measure(srv, nodes, pods, timeout, window, tmp / f"nodes-{datastore}")
    finally:
        srv.stop()
        if pg is not None:
            pg.destroy()


async def _measure(srv: ServerProcess, nodes: int, pods: int, timeout: float, window: float,
                   tmp: Path) -> dict:
    fleet = HollowFleet(nodes, srv.url, srv.join_token(), tmp / str(nodes))
    out: dict[str, float] = {}
    ctx = client_ssl(srv.kubeconfig, tmp.parent)
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
            out.update(await pods_through_deployments(api, pods, timeout))
            out["rss_pods"] = rss_mb(srv.proc.pid)
            out["reconnect"] = await reconnect_after_restart(srv, fleet, timeout)
    finally:
        await fleet.stop()
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


def report(name: str, nodes: int, r: dict) -> None:
    p = f"{name}_"
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
    emit(p + "pods_running", r["running"], "pods", f"{r['pods']} by the deadline")
    emit(p + "pods_scheduled_per_s", r["pods"] / r["scheduled_s"], "pods/s", ">= 300/s")
    emit(p + "pods_running_per_s", r["pods"] / r["running_s"], "pods/s")
    for verb in ("get", "list", "create"):
        emit(p + f"api_{verb}_p99", r[f"{verb}_p99"] * 1000, "ms",
             "< 100 ms" if verb != "list" else "")
    emit(p + "server_rss_pods", r["rss_pods"], "MB", "< 1500 MB at 30,000 pods")
    emit(p + "server_rss_per_pod", (r["rss_pods"] - r["rss_nodes"]) * 1024 / r["pods"], "KB")
    emit(p + "reconnect_after_restart", r["reconnect"], "s", "< 60 s")


# the figures compared, postgres / sqlite, by name and how each is read from a run
_COMPARED = (("pods_scheduled_per_s", lambda r: r["pods"] / r["scheduled_s"]),
             ("api_get_p99", lambda r: r["get_p99"]), ("api_list_p99", lambda r: r["list_p99"]),
             ("api_create_p99", lambda r: r["create_p99"]), ("server_rss_pods",
                                                             lambda r: r["rss_pods"]),
             ("reconnect_after_restart", lambda r: r["reconnect"]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, action="append", help="a size (repeatable)")
    ap.add_argument("--pods-per-node", type=int, default=1)
    ap.add_argument("--pods", type=int, help="pods in all (instead of --pods-per-node)")
    ap.add_argument("--datastore", action="append", choices=("sqlite", "postgres"),
                    help="run on this datastore (repeatable: side by side; default sqlite)")
    ap.add_argument("--timeout", type=float, default=600, help="bound of each phase (s)")
    ap.add_argument("--window", type=float, default=20,
                    help="seconds of steady heartbeats measured")
    args = ap.parse_args()
    # the hollow agents' reconnect warnings during the restart are expected: figures only
    logging.basicConfig(level=logging.ERROR)
    # the hollow nodes' caches are millions of objects in this process: the server's reason
    # (k3py/server/main.py) for fewer full collections holds here too
    gc.set_threshold(10_000, 10, 100)
    sizes = sorted(args.nodes or [100])
    stores = args.datastore or ["sqlite"]
    results = {}
    with tempfile.TemporaryDirectory(prefix="k3py-scale-") as d:
        for n in sizes:
            for store in stores:
                pods = args.pods or n * args.pods_per_node
                results[store, n] = asyncio.run(one_run(store, n, pods, args.timeout,
                                                        args.window, Path(d)))
                report(f"n{n}_{store}", n, results[store, n])
    if len(sizes) > 1:
        small, big = results[stores[0], sizes[0]], results[stores[0], sizes[-1]]
        per = [(r["rss_nodes"] - r["rss_idle"]) / n for n, r in ((sizes[0], small),
                                                              (sizes[-1], big))]
        print(f"ratio: {per[1] / per[0]:.2f}   (server RSS per node, {sizes[-1]} / {sizes[0]} "
              f"nodes, {stores[0]})")
    if len(stores) > 1:
        for n in sizes:
            pg, lite = results["postgres", n], results["sqlite", n]
            for name, value in _COMPARED:
                print(f"ratio: {value(pg) / value(lite):.2f}   ({name}, postgres / sqlite, "
                      f"{n} nodes)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
