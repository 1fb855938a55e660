"""Store churn benchmark: many updates over a few hundred keys with compaction and checkpoints
on short intervals; shows state.db and its WAL stay flat and what group commit sustains.

Run: python3 bench/churn.py [--updates 200000] [--seconds 60] [--quick]. Prints `name: value unit`
lines and a `ratio: x` line (largest file in the 2nd half of the run over the 1st half; <= ~1
means flat). Bounded in count (--updates) and time (--seconds)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import apsw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from k3py.server.store.sqlite import SQLiteBackend  # noqa: E402


def size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def rows(path: str) -> int:
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute("SELECT COUNT(*) FROM kine").fetchone()[0]
    finally:
        conn.close()


async def run(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="k3py-churn-")
    db = os.path.join(tmp, "state.db")
    wal = db + "-wal"
    store = SQLiteBackend(db, compact_interval=args.compact_interval,
                          compact_min_retain=args.min_retain,
                          checkpoint_interval=args.checkpoint_interval)
    await store.start()
    value = b'{"data":{"payload":"' + b"x" * args.value_size + b'"}}'
    keys = [f"/registry/configmaps/churn/k{i:04d}" for i in range(args.keys)]
    revs = dict(zip(keys, await asyncio.gather(*[store.create(k, value) for k in keys]),
                    strict=True))
    await store.checkpoint()
    db_start = size(db)

    done = 0
    deadline = time.monotonic() + args.seconds
    latencies: list[float] = []
    db_samples: list[tuple[int, int]] = []  # (updates done, db size)
    wal_samples: list[int] = []

    async def sample() -> None:
        while True:
            db_samples.append((done, size(db)))
            wal_samples.append(size(wal))
            await asyncio.sleep(0.05)

    async def worker(mine: list[str]) -> None:
        nonlocal done
        i = 0
        while done < args.updates and time.monotonic() < deadline:
            key = mine[i % len(mine)]
            i += 1
            t0 = time.perf_counter()
            rev, _, ok = await store.update(key, value, revs[key])
            latencies.append(time.perf_counter() - t0)
            assert ok, key
            revs[key] = rev
            done += 1

    sampler = asyncio.create_task(sample())
    t0 = time.perf_counter()
    c = args.concurrency
    await asyncio.gather(*[worker(keys[n::c]) for n in range(c) if keys[n::c]])
    elapsed = time.perf_counter() - t0
    await store.compact(await store.current_revision() - args.min_retain)
    for _ in range(20):  # each checkpoint returns a bounded number of free pages
        before = size(db)
        await store.checkpoint()
        if size(db) == before:
            break
    sampler.cancel()
    wal_max = max([size(wal), *wal_samples])
    # Flat = the second half of the run needs no more file than the first half did.
    first = max((s for n, s in db_samples if n <= done // 2), default=0)
    second = max((s for n, s in db_samples if n > done // 2), default=0)
    db_end, wal_end = size(db), size(wal)
    compact_lag = await store.current_revision() - await store.compact_revision()
    await store.close()
    n_rows = rows(db)
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else float("nan")

    print(f"updates: {done} count")
    print(f"keys: {args.keys} count")
    print(f"elapsed: {elapsed:.1f} s")
    print(f"updates_per_s: {done / elapsed:.0f} ops/s")
    print(f"update_p99: {p99:.1f} ms")
    print(f"db_size_start: {db_start / 1e6:.2f} MB")
    print(f"db_size_max_first_half: {first / 1e6:.2f} MB")
    print(f"db_size_max_second_half: {second / 1e6:.2f} MB")
    print(f"db_size_end: {db_end / 1e6:.2f} MB")
    print(f"wal_size_max: {wal_max / 1e6:.2f} MB")
    print(f"wal_size_end: {wal_end / 1e6:.2f} MB")
    print(f"rows_end: {n_rows} count")
    print(f"compact_lag: {compact_lag} revisions")
    if first:
        print(f"ratio: {second / first:.2f} (db_size_max_second_half / db_size_max_first_half)")
    os.remove(db)
    for extra in (wal, db + "-shm"):
        if os.path.exists(extra):
            os.remove(extra)
    os.rmdir(tmp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=200_000)
    ap.add_argument("--keys", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--value-size", type=int, default=1024)
    ap.add_argument("--compact-interval", type=float, default=0.5)
    ap.add_argument("--min-retain", type=int, default=1000)
    ap.add_argument("--checkpoint-interval", type=float, default=0.5)
    ap.add_argument("--quick", action="store_true", help="20k updates, 15 s at most")
    args = ap.parse_args()
    if args.quick:
        args.updates, args.seconds = min(args.updates, 20_000), min(args.seconds, 15.0)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
