"""Store autonomy benchmark: kill -9 of a real `k3py server` under a mixed write load, N rounds
in a row (what was acknowledged, what was lost, time to ready after each restart next to a
cold start), and the agent's meta.db writes/s with synchronous=FULL next to NORMAL.

Run: python3 bench/autonomy_store.py [--rounds 50] [--meta-writes 2000] [--dir DIR].
Prints `name: value unit` lines and `ratio: x` lines. Traffic goes only to 127.0.0.1; rounds
and writes are bounded in count, each round's load in time (tests/integration/storeload.py).
meta.db is measured in --dir (default: a temp dir): put it on the disk the agent will use."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from k3py.agent.metamanager import MetaManager  # noqa: E402
from k3py.tunnel.message import GROUP_RESOURCE, OP_UPDATE, new_message  # noqa: E402
from tests.harness import ServerProcess  # noqa: E402
from tests.integration.storeload import SERVER_ARGS, KillRounds  # noqa: E402

META_BLOCKS = 4  # FULL and NORMAL alternate, so both see the same disk and machine load


def emit(name: str, value: float, unit: str = "") -> None:
    print(f"{name}: {value:.2f} {unit}".rstrip(), flush=True)


def kill_rounds(rounds: int, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="k3py-kill9-") as tmp:
        srv = ServerProcess(Path(tmp), extra_args=SERVER_ARGS)
        t0 = time.perf_counter()
        srv.start()
        cold = time.perf_counter() - t0
        load = KillRounds(srv, random.Random(seed))
        t0 = time.perf_counter()
        try:
            asyncio.run(load.run(rounds))
        finally:
            srv.stop()
        elapsed = time.perf_counter() - t0
    f = load.figures()
    emit("kill9_rounds", f["rounds"])
    emit("kill9_writes_acknowledged", f["writes_acknowledged"])
    emit("kill9_lost", f["lost"])
    emit("kill9_problems", len(load.problems))
    emit("kill9_watch_410", f["watch_410"])
    emit("kill9_watch_events_checked", f["watch_events_checked"])
    emit("kill9_run_time", elapsed, "s")
    emit("cold_start_to_ready", cold, "s")
    emit("restart_to_ready_median", f["ready_after_restart_median"], "s")
    emit("restart_to_ready_max", f["ready_after_restart_max"], "s")
    print(f"ratio: {f['ready_after_restart_median'] / cold:.2f} "
          f"(restart_to_ready_median / cold_start_to_ready)", flush=True)
    for p in load.problems[:10]:
        print(f"# {p}", file=sys.stderr)


async def meta_writes(where: Path, sync: str, n: int, start: int) -> float:
    """Seconds for n pod messages applied one after another, as edgehub applies them."""
    mm = MetaManager(str(where / f"meta-{sync.lower()}.db"))
    await mm.open()
    mm._db.execute(f"PRAGMA synchronous={sync}")  # the bench's peer: what the agent ran before
    msgs = [new_message(source="cloudhub", group=GROUP_RESOURCE, operation=OP_UPDATE,
                        resource=f"pods/default/p{i % 100}",
                        content={"metadata": {"name": f"p{i % 100}", "namespace": "default",
                                              "resourceVersion": str(i)},
                                 "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
            for i in range(start, start + n)]
    t0 = time.perf_counter()
    for m in msgs:
        await mm.apply(m)
    elapsed = time.perf_counter() - t0
    await mm.close()
    return elapsed


def meta_sync_cost(writes: int, where: str | None) -> None:
    per_block = max(1, writes // META_BLOCKS)
    with tempfile.TemporaryDirectory(prefix="k3py-meta-", dir=where) as tmp:
        took = {"FULL": 0.0, "NORMAL": 0.0}
        for b in range(META_BLOCKS):
            for sync in ("FULL", "NORMAL") if b % 2 == 0 else ("NORMAL", "FULL"):
                took[sync] += asyncio.run(meta_writes(Path(tmp), sync, per_block,
                                                      b * per_block))
    total = per_block * META_BLOCKS
    full, normal = total / took["FULL"], total / took["NORMAL"]
    emit("meta_apply_synchronous_full", full, "writes/s")
    emit("meta_apply_synchronous_normal", normal, "writes/s")
    emit("meta_apply_full_ms", 1000 / full, "ms/write")
    print(f"ratio: {full / normal:.2f} (meta_apply_synchronous_full / "
          f"meta_apply_synchronous_normal)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50, help="kill -9 rounds (0: skip)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--meta-writes", type=int, default=2000, help="0: skip")
    ap.add_argument("--dir", default=None, help="where meta.db is measured")
    args = ap.parse_args()
    if args.meta_writes > 0:
        meta_sync_cost(args.meta_writes, args.dir)
    if args.rounds > 0:
        seed = args.seed if args.seed is not None else random.randrange(1 << 30)
        print(f"# seed {seed}", file=sys.stderr)
        kill_rounds(args.rounds, seed)


if __name__ == "__main__":
    main()
