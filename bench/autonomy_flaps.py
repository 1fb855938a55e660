"""Link-flapping benchmark (issue 10): a `k3py agent` in a network namespace sees --flaps cuts of
1-5 s in a row while pods churn on its node (a running pod and a probe pod created, older ones
deleted, through kubectl during each cut); tests/integration/flaps.py is the rig.

Prints, for the agent and the server, RSS, open fds, TCP sockets and live asyncio tasks after a
warm-up round and after the run (both with only the steady pod on the node, once the server's
view, podman's and the node's own agree), each with `ratio: after/before`; and the time from
the link's return to a probe pod's status back on the server (p50/p99), and to the agent's
"tunnel connected" for the cuts after which it dialled again (p50/p99 and how many). On
stderr: RSS and the store's size every 20 flaps, and the task and object types that grew.

Run (root, for `ip netns`): python3 bench/autonomy_flaps.py [--flaps 100] [--warmup 10]
[--seed 1] [--compact-interval S]. Exits 1 with a one-line reason when the run cannot be measured or the views do not
converge. Bounded: every wait has a deadline; the server, the agent, the namespace and every
podman pod of the node are removed, even on failure."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import emit, pct, rss_mb  # noqa: E402
from tests.integration.flaps import FlapRig, Usage  # noqa: E402
from tests.integration.netns import NetNS, netns_available  # noqa: E402


def emit_usage(who: str, before: Usage, after: Usage) -> None:
    for name, b, a, unit in (("rss", before.rss_mb, after.rss_mb, "MB"),
                             ("sqlite_memory", before.sqlite_mb, after.sqlite_mb, "MB"),
                             ("fds", before.fds, after.fds, ""),
                             ("tcp_sockets", before.tcp, after.tcp, ""),
                             ("asyncio_tasks", before.task_count, after.task_count, "")):
        emit(f"{who}_{name}_before", b, unit)
        emit(f"{who}_{name}_after", a, unit)
        print(f"ratio: {a / b:.3f}" if b else "ratio: nan", flush=True)
    if grown := after.grown(before):
        print(f"# {who}: tasks that grew (before, after): {grown}", file=sys.stderr, flush=True)
    objects = sorted(after.grown(before, "objects").items(),
                     key=lambda kv: kv[1][0] - kv[1][1])[:8]
    print(f"# {who}: object types that grew most (before, after): {dict(objects)}",
          file=sys.stderr, flush=True)


def trend(rig: FlapRig) -> str:
    """RSS of both processes and the size of the server's store, while the pods churn."""
    db = rig.srv.data_dir / "server" / "db"
    size = sum(f.stat().st_size for f in db.iterdir()) / 2**20 if db.is_dir() else 0.0
    assert rig.agent is not None and rig.srv.proc is not None
    return (f"agent rss {rss_mb(rig.agent.pid):.1f} MB, server rss "
            f"{rss_mb(rig.srv.proc.pid):.1f} MB, server store {size:.1f} MB")


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="k3py-flaps-") as tmp, NetNS() as ns:
        rig = FlapRig(Path(tmp), ns, seed=args.seed, server_args=(
            ("--compact-interval", str(args.compact_interval)) if args.compact_interval else ()))
        try:
            rig.start()
            for _ in range(args.warmup):
                rig.flap()
            rig.clear_churn()
            rig.converge()
            before = rig.usage()
            print(f"# before: {trend(rig)}", file=sys.stderr, flush=True)
            steady = rig.steady_container()
            rig.recoveries.clear()
            rig.reconnects.clear()
            t0 = time.monotonic()
            for i in range(1, args.flaps + 1):
                rig.flap()
                if i % 20 == 0:
                    print(f"# after {i} flaps: {trend(rig)}", file=sys.stderr, flush=True)
            took = time.monotonic() - t0
            rig.clear_churn()
            rig.converge()
            after = rig.usage()
            print(f"# after: {trend(rig)}", file=sys.stderr, flush=True)
            emit("flaps", args.flaps)
            emit("flapping_duration", took, "s")
            emit("steady_pod_recreated", float(rig.steady_container() != steady))
            emit("probe_round_trip_p50", pct(rig.recoveries, 50), "s")
            emit("probe_round_trip_p99", pct(rig.recoveries, 99), "s")
            emit("redials", len(rig.reconnects))
            emit("tunnel_reconnect_p50", pct(rig.reconnects, 50), "s")
            emit("tunnel_reconnect_p99", pct(rig.reconnects, 99), "s")
            emit_usage("agent", before["agent"], after["agent"])
            emit_usage("server", before["server"], after["server"])
        finally:
            rig.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flaps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--compact-interval", type=float, default=0.0,
                    help="the server's --compact-interval (default: the server's own)")
    args = ap.parse_args()
    ok, why = netns_available()
    if not ok:
        print(f"cannot run: {why}", file=sys.stderr)
        return 1
    try:
        run(args)
    except (AssertionError, TimeoutError) as e:
        print(f"failed: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
