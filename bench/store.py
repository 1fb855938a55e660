"""Datastore benchmark: one server on the embedded SQLite store vs one on PostgreSQL
(--datastore-endpoint), side by side in one run: ConfigMap creates/s and GET p99 at concurrency
16, and with two servers on PostgreSQL, how long a write on one takes to reach a watch on the other.

Run: python3 bench/store.py [--seconds 5]. PostgreSQL is a throwaway cluster (tests/pg.py) with
fsync on, as durable as SQLite's synchronous=FULL. Prints `name: value unit` and `ratio: x` lines;
traffic goes only to 127.0.0.1; every loop is bounded in count and time."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import client_ssl, emit, load, pct  # noqa: E402
from tests.harness import ServerProcess  # noqa: E402
from tests.pg import PostgresCluster  # noqa: E402

CONCURRENCY = 16
JSON = {"Content-Type": "application/json"}


def configmap(name: str, **data: str) -> bytes:
    return orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                         "data": data or {"k": "v" * 200}})


async def creates_and_gets(srv: ServerProcess, tmp: Path, seconds: float) -> dict[str, float]:
    ctx = client_ssl(srv.kubeconfig, tmp)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=0)) as s:
        url = f"{srv.url}/api/v1/namespaces/default/configmaps"
        lat, rps = await load(s, "POST", lambda w, i: url, lambda w, i: configmap(f"c-{w}-{i}"),
                              seconds, CONCURRENCY, 50_000)
        glat, grps = await load(s, "GET", lambda w, i: f"{url}/c-{w}-{i % 20 + 1}", None,
                                seconds, CONCURRENCY, 200_000)
    return {"create_rps": rps, "create_p99": pct(lat, 99), "get_rps": grps,
            "get_p99": pct(glat, 99)}


async def cross_server_watch(a: ServerProcess, b: ServerProcess, tmp: Path,
                             writes: int) -> list[float]:
    """ms from sending a create to server A until a watch on server B delivers it."""
    ctx = client_ssl(a.kubeconfig, tmp)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=0)) as s:
        path = "/api/v1/namespaces/default/configmaps"
        sent: dict[str, float] = {}
        got: list[float] = []
        opened = asyncio.Event()

        async def watch() -> None:
            async with s.get(f"{b.url}{path}?watch=1&allowWatchBookmarks=false",
                             timeout=aiohttp.ClientTimeout(total=None)) as r:
                opened.set()
                async for line in r.content:
                    name = orjson.loads(line)["object"]["metadata"]["name"]
                    if name in sent:
                        got.append((time.perf_counter() - sent[name]) * 1000)
        task = asyncio.create_task(watch())
        await asyncio.wait_for(opened.wait(), 30)
        await asyncio.sleep(0.5)  # the server registers the watch after sending headers
        for i in range(writes):
            name = f"w-{i}"
            sent[name] = time.perf_counter()
            async with s.post(f"{a.url}{path}", data=configmap(name, n=str(i)),
                              headers=JSON) as r:
                await r.read()
        deadline = time.perf_counter() + 10
        while len(got) < writes and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return got


def run_one(srv: ServerProcess, tmp: Path, seconds: float) -> dict[str, float]:
    srv.start(timeout=60)
    try:
        return asyncio.run(creates_and_gets(srv, tmp, seconds))
    finally:
        srv.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0, help="per load phase (max 60)")
    ap.add_argument("--watch-writes", type=int, default=200, help="cross-server writes (max 2000)")
    args = ap.parse_args()
    seconds, writes = min(args.seconds, 60.0), min(args.watch_writes, 2000)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        pg = PostgresCluster(fsync=True).start()
        try:
            sqlite = run_one(ServerProcess(tmp / "sqlite"), tmp, seconds)
            dsn = pg.create_db("bench")
            pgres = run_one(ServerProcess(tmp / "pg", extra_args=["--datastore-endpoint", dsn]),
                            tmp, seconds)
            for key, unit in (("create_rps", "req/s"), ("create_p99", "ms"),
                              ("get_rps", "req/s"), ("get_p99", "ms")):
                emit(f"sqlite_{key}", sqlite[key], unit)
                emit(f"postgres_{key}", pgres[key], unit)
                print(f"ratio: {pgres[key] / sqlite[key]:.2f}   (postgres / sqlite {key})")
            shared = pg.create_db("watch")
            a = ServerProcess(tmp / "a", extra_args=["--datastore-endpoint", shared])
            b = ServerProcess(tmp / "b", extra_args=["--datastore-endpoint", shared])
            a.start(timeout=60)
            try:  # B serves with A's CAs, so one client certificate works on both
                shutil.copytree(a.data_dir / "server" / "tls", b.data_dir / "server" / "tls")
                shutil.copy(a.data_dir / "server" / "token", b.data_dir / "server" / "token")
                b.start(timeout=60)
                lat = asyncio.run(cross_server_watch(a, b, tmp, writes))
            finally:
                b.stop()
                a.stop()
            emit("cross_server_watch_events", len(lat), "events")
            emit("cross_server_watch_missing", writes - len(lat), "events")
            emit("cross_server_watch_p50", pct(lat, 50), "ms")
            emit("cross_server_watch_p99", pct(lat, 99), "ms", "< 100 ms")
            print(f"ratio: {pct(lat, 99) / 100:.2f}   (cross-server watch p99 / 100 ms target)")
        finally:
            pg.destroy()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
