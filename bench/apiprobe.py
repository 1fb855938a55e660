"""The API latency probe of bench/scale.py, run in a process of its own: a client's GET, LIST
and CREATE every 50 ms, timed on its own event loop (uvloop, as the server's).

Why a process of its own: in the bench's process the probe shares one event loop with the
hollow nodes, whose lag reached 250 ms (docs/ha.md, "The event loop's long stretches"), so
its latencies were that lag and the server's together; upstream, too, measures the API's
latency apart from the load. `ProbeProcess` is the bench's end: it starts this module as a
child (`python3 bench/apiprobe.py URL KUBECONFIG`), which says `ready` on stdout once it
probes, probes until its stdin closes, then prints its samples as one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import client_ssl, pct  # noqa: E402

__all__ = ["ApiProbe", "ProbeProcess", "ProbeReport"]

JSON = {"Content-Type": "application/json"}
VERBS = ("get", "list", "create")
READY = b"ready"


class ApiProbe:
    """A client's single-object GET, chunked LIST (kubectl's limit=500) and CREATE, one after
    the other every 50 ms; `lat` holds their latencies in seconds, by verb."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.s = session
        self.lat: dict[str, list[float]] = {verb: [] for verb in VERBS}

    async def _timed(self, verb: str, method: str, path: str, body: bytes | None = None,
                     ok: int = 200) -> None:
        t = time.monotonic()
        async with self.s.request(method, self.base + path, data=body, headers=JSON) as r:
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


@dataclass
class ProbeReport:
    """What the child measured: latencies in seconds by verb, and why it stopped early
    (empty if it ran until told to stop)."""

    lat: dict[str, list[float]]
    error: str = ""

    @classmethod
    def parse(cls, out: bytes, err: bytes, returncode: int | None) -> ProbeReport:
        """The child's last stdout line; without one, its last stderr line says why."""
        try:
            got = orjson.loads(out.splitlines()[-1])
            return cls({verb: got[verb] for verb in VERBS}, got["error"])
        except (IndexError, KeyError, TypeError, orjson.JSONDecodeError):
            said = err.decode(errors="replace").strip().splitlines()
            return cls.failed(said[-1] if said else f"exit status {returncode}, no report")

    @classmethod
    def failed(cls, why: str) -> ProbeReport:
        return cls({verb: [] for verb in VERBS}, why)

    def samples(self) -> int:
        return sum(len(v) for v in self.lat.values())

    def ms(self, p: float) -> dict[str, float]:
        """The p-th percentile in milliseconds, by verb (nan without a sample)."""
        return {verb: pct(self.lat[verb], p) * 1000 for verb in VERBS}


class ProbeProcess:
    """This module as the bench's child: `start` until it probes, `stop` for its report. A
    child that fails to start or to stop is killed and its report says so: never an
    exception, never a wait past the timeout, so that the bench goes on."""

    def __init__(self, base: str, kubeconfig: Path) -> None:
        self.base = base
        self.kubeconfig = kubeconfig
        self.proc: asyncio.subprocess.Process | None = None
        self.report: ProbeReport | None = None

    async def start(self, timeout: float = 30.0) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), self.base, str(self.kubeconfig),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        with contextlib.suppress(TimeoutError):
            if (await asyncio.wait_for(self.proc.stdout.readline(), timeout)).strip() == READY:
                return
        said = (await self._finish(5.0)).error or f"no `ready` within {timeout:.0f} s"
        self.report = ProbeReport.failed(f"did not start: {said}")

    async def stop(self, timeout: float = 10.0) -> ProbeReport:
        if self.report is None:
            self.report = await self._finish(timeout)
        return self.report

    async def _finish(self, timeout: float) -> ProbeReport:
        """Close the child's stdin (its signal to report) and read its report."""
        proc = self.proc
        assert proc is not None and proc.stdin is not None
        proc.stdin.close()
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return ProbeReport.failed(f"no report within {timeout:.0f} s of its stop: killed")
        return ProbeReport.parse(out, err, proc.returncode)


async def _stdin_closed() -> None:
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def probe(base: str, kubeconfig: Path) -> dict:
    """Probe `base` until stdin closes or a request fails: the samples and the failure."""
    with tempfile.TemporaryDirectory(prefix="k3py-apiprobe-") as d:
        ctx = client_ssl(kubeconfig, Path(d))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=0)) as s:
        prober = ApiProbe(base, s)
        running = asyncio.create_task(prober.run())
        closed = asyncio.create_task(_stdin_closed())
        sys.stdout.buffer.write(READY + b"\n")
        sys.stdout.flush()
        await asyncio.wait((running, closed), return_when=asyncio.FIRST_COMPLETED)
        for task in (running, closed):
            task.cancel()
        await asyncio.gather(running, closed, return_exceptions=True)
    return {**prober.lat, "error": _failure(running) or _failure(closed)}


def _failure(task: asyncio.Task) -> str:
    if task.cancelled() or task.exception() is None:
        return ""
    return f"{type(task.exception()).__name__}: {task.exception()}"


def main() -> None:
    ap = argparse.ArgumentParser(description="bench/scale.py's API probe (run by it)")
    ap.add_argument("base", help="the server's URL, https://127.0.0.1:PORT")
    ap.add_argument("kubeconfig", type=Path, help="an admin kubeconfig with a client cert")
    args = ap.parse_args()
    # Ctrl-C reaches the whole process group: the bench stops this child by closing its
    # stdin, and still gets the samples
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import uvloop
    except ImportError:  # optional, as for the server
        run = asyncio.run
    else:
        run = uvloop.run
    report = run(probe(args.base, args.kubeconfig))
    sys.stdout.buffer.write(orjson.dumps(report) + b"\n")


if __name__ == "__main__":
    main()
