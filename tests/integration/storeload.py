"""kill -9 of a real `k3py server` under a mixed write load over HTTP, and the oracle that says
what must be there afterwards; used by test_store_kill9.py (KILL_ROUNDS rounds) and
bench/autonomy_store.py (50 rounds, with figures).

Each client owns its ConfigMaps and walks each through create -> update (PUT, with its
resourceVersion) -> merge patch -> delete (half of them), so the last 2xx answer per key is
what must be there; the one write a client has in flight when the server dies may land or not."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import apsw

from tests.harness import ServerProcess

__all__ = ["NAMESPACES", "SERVER_ARGS", "KillRounds", "client_ssl", "integrity"]

NAMESPACES = ("load-a", "load-b", "load-c")
# compaction every second, so it too runs (and is killed) under the load; 3000 revisions kept
# is more than a round writes, so a watch from the round's start resumes rather than get 410
SERVER_ARGS = ["--compact-interval", "1", "--compact-min-retain", "3000"]
CLIENTS = 4
MAX_KEYS_PER_ROUND = 400  # per client: bounds a round even if the kill came late
REQUEST_TIMEOUT = 10.0
WATCH_TIMEOUT = 20.0

Key = tuple[str, str]  # (namespace, name)


@dataclass
class Acked:
    """The last 2xx answer for a key: its resourceVersion and data; data None = deleted."""
    rv: int
    data: dict | None


@dataclass
class Watched:
    """One watch: from which revision, the (key, revision) of each event, 410 or not."""
    since: int
    events: list[tuple[Key, int]] = field(default_factory=list)
    gone: bool = False

    @property
    def last(self) -> int:
        return self.events[-1][1] if self.events else self.since


def client_ssl(srv: ServerProcess) -> ssl.SSLContext:
    """The admin's TLS context, from the kubeconfig the server wrote (via the kubernetes
    client's loader, which writes the certificate files)."""
    cfg = srv.client().configuration
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
    ctx.check_hostname = False
    ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    return ctx


def integrity(db: Path) -> str:
    """PRAGMA integrity_check of a store file (the server must not be writing it)."""
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return "; ".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def _rv(obj: dict) -> int:
    return int((obj.get("metadata") or {}).get("resourceVersion") or 0)


class _ServerGone(Exception):
    """The connection broke: the server was killed while this request was out."""


class KillRounds:
    """Rounds of: load from CLIENTS clients, kill -9 at a random moment, check the file,
    restart, check every acknowledged write, resume the watch. `problems` lists what broke."""

    def __init__(self, srv: ServerProcess, rng: random.Random,
                 kill_after: tuple[float, float] = (0.3, 1.2)) -> None:
        self.srv = srv
        self.rng = rng
        self.kill_after = kill_after
        self.acked: dict[Key, Acked] = {}
        self.in_flight: dict[Key, dict | None] = {}  # what the unanswered write would leave
        self.acked_log: list[tuple[Key, int]] = []  # (key, rv) of each 2xx create/update/patch
        self.max_rv = 0  # the highest resourceVersion answered
        self.floor = 0  # max_rv when the server was last killed: later answers are above it
        self.writes = 0
        self.lost = 0  # keys not as their answers left them
        self.watch_gone = 0
        self.watch_events = 0  # events the resumed watches checked
        self.ready_times: list[float] = []
        self.problems: list[str] = []
        self._round = 0

    @property
    def db(self) -> Path:
        return self.srv.data_dir / "server" / "db" / "state.db"

    async def run(self, rounds: int) -> None:
        ctx = client_ssl(self.srv)
        for ns in NAMESPACES:
            self.srv.kubectl("create", "namespace", ns)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
            async with s.get(f"{self.srv.url}/api/v1/configmaps") as r:
                since = _rv(await r.json())
        for _ in range(rounds):
            since = await self._round_once(ctx, since)
            if self.problems:
                return

    async def _round_once(self, ctx: ssl.SSLContext, since: int) -> int:
        self._round += 1
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx, limit=0),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as s:
            watch = Watched(since)
            watcher = asyncio.create_task(self._watch(s, watch))
            clients = [asyncio.create_task(self._client(s, c)) for c in range(CLIENTS)]
            await asyncio.sleep(self.rng.uniform(*self.kill_after))
            await asyncio.to_thread(self.srv.kill9)
            self.srv.stop()  # closes its log file; the next start opens it again
            await asyncio.wait_for(asyncio.gather(*clients, watcher), REQUEST_TIMEOUT + 5)
        self.floor = self.max_rv
        check = await asyncio.to_thread(integrity, self.db)
        if check != "ok":
            self.problems.append(f"round {self._round}: integrity_check: {check}")
        t0 = time.perf_counter()
        await asyncio.to_thread(self.srv.start)
        self.ready_times.append(time.perf_counter() - t0)
        async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as s:
            await self._verify(s)
            marker = await self._write_marker(s)
            # as the client that watched (from the last event it saw), and as one that was
            # far behind (from the round's start: every write of the round comes again)
            await self._check_watch(s, watch.last, marker)
            await self._check_watch(s, since, marker)
        return watch.last

    # ---------------------------------------------------------------- the load

    async def _client(self, s: aiohttp.ClientSession, c: int) -> None:
        for i in range(MAX_KEYS_PER_ROUND):
            key = (NAMESPACES[i % len(NAMESPACES)], f"r{self._round}-c{c}-{i}")
            try:
                await self._walk(s, key)
            except _ServerGone:
                return

    async def _walk(self, s: aiohttp.ClientSession, key: Key) -> None:
        ns, name = key
        coll = f"{self.srv.url}/api/v1/namespaces/{ns}/configmaps"
        body = {"metadata": {"name": name}, "data": {"v": "created"}}
        obj = await self._write(s, key, "POST", coll, body, {"v": "created"})
        body = {**obj, "data": {"v": "updated"}}  # carries the resourceVersion: a CAS
        obj = await self._write(s, key, "PUT", f"{coll}/{name}", body, {"v": "updated"})
        await self._write(s, key, "PATCH", f"{coll}/{name}", {"data": {"v": "patched"}},
                          {"v": "patched"})
        if self.rng.random() < 0.5:
            await self._write(s, key, "DELETE", f"{coll}/{name}", None, None)

    async def _write(self, s: aiohttp.ClientSession, key: Key, method: str, url: str,
                     body: dict | None, leaves: dict | None) -> dict:
        self.in_flight[key] = leaves
        headers = {"Content-Type": "application/merge-patch+json" if method == "PATCH"
                   else "application/json"}
        try:
            async with s.request(method, url, data=json.dumps(body) if body else None,
                                 headers=headers) as r:
                text = await r.text()
                status = r.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise _ServerGone() from e
        if status // 100 != 2:
            del self.in_flight[key]
            self.problems.append(f"round {self._round}: {method} {key}: {status} {text[:200]}")
            raise _ServerGone()
        obj = json.loads(text)
        del self.in_flight[key]
        self.writes += 1
        rv = _rv(obj)
        self.max_rv = max(self.max_rv, rv)
        if method != "DELETE" and rv <= self.floor:  # a delete may answer with a Status
            self.problems.append(f"round {self._round}: {method} {key} answered revision {rv}, "
                                 f"not above {self.floor} answered before the kill")
        self.acked[key] = Acked(rv, leaves)
        if leaves is not None:
            self.acked_log.append((key, rv))
        return obj

    async def _watch(self, s: aiohttp.ClientSession, w: Watched) -> None:
        """Follow every ConfigMap from w.since until the server dies (or WATCH_TIMEOUT)."""
        url = f"{self.srv.url}/api/v1/configmaps"
        params = {"watch": "1", "resourceVersion": str(w.since),
                  "timeoutSeconds": str(int(WATCH_TIMEOUT))}
        try:
            async with s.get(url, params=params,
                             timeout=aiohttp.ClientTimeout(total=WATCH_TIMEOUT + 5)) as r:
                if r.status == 410:
                    w.gone = True
                    return
                async for line in r.content:
                    ev = json.loads(line)
                    obj = ev["object"]
                    if ev["type"] == "ERROR":
                        w.gone = obj.get("code") == 410
                        if not w.gone:
                            self.problems.append(f"round {self._round}: watch error {obj}")
                        return
                    md = obj["metadata"]
                    w.events.append(((md.get("namespace", ""), md["name"]), _rv(obj)))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return  # the server died under it; a line cut in half is not an event

    # ---------------------------------------------------------------- the checks

    async def _verify(self, s: aiohttp.ClientSession) -> None:
        """Every key is as its last 2xx answer left it, or as its in-flight write would."""
        actual: dict[Key, tuple[int, dict]] = {}
        list_rv = 0
        for ns in NAMESPACES:
            async with s.get(f"{self.srv.url}/api/v1/namespaces/{ns}/configmaps") as r:
                assert r.status == 200, await r.text()
                body = await r.json()
            list_rv = max(list_rv, _rv(body))
            for obj in body["items"]:
                if obj["metadata"]["name"] != "kube-root-ca.crt":
                    actual[(ns, obj["metadata"]["name"])] = (_rv(obj), obj.get("data"))
        if list_rv < self.floor:
            self.problems.append(f"round {self._round}: revision went back to {list_rv} "
                                 f"from {self.floor}")
        for key in set(self.acked) | set(self.in_flight) | set(actual):
            problem = _check_key(key, self.acked.get(key), self.in_flight, actual.get(key))
            if problem:
                self.lost += 1
                self.problems.append(f"round {self._round}: {problem}")
            got = actual.get(key)
            self.acked[key] = Acked(got[0], got[1]) if got else Acked(0, None)
        self.in_flight.clear()

    async def _write_marker(self, s: aiohttp.ClientSession) -> tuple[Key, int]:
        """A ConfigMap written after the restart: the resumed watches read up to it."""
        marker = (NAMESPACES[0], f"r{self._round}-marker")
        url = f"{self.srv.url}/api/v1/namespaces/{marker[0]}/configmaps"
        data = {"v": "marker"}
        async with s.post(url, json={"metadata": {"name": marker[1]}, "data": data}) as r:
            assert r.status == 201, await r.text()
            marker_rv = _rv(await r.json())
        self.acked[marker] = Acked(marker_rv, data)
        self.max_rv = max(self.max_rv, marker_rv)
        return marker, marker_rv

    async def _check_watch(self, s: aiohttp.ClientSession, since: int,
                           marker: tuple[Key, int]) -> None:
        """A watch from `since` (before the kill) gets, in order, every acknowledged write
        after it up to the marker (or 410 Gone if `since` was compacted meanwhile)."""
        after = Watched(since)
        deadline = time.monotonic() + WATCH_TIMEOUT
        while marker not in after.events and not after.gone:
            if time.monotonic() > deadline:
                self.problems.append(f"round {self._round}: the resumed watch from "
                                     f"{since} never showed the marker {marker}")
                return
            await self._watch_until(s, after, marker[1])
        if after.gone:
            self.watch_gone += 1
            return
        revs = [rv for _, rv in after.events]
        if revs != sorted(set(revs)) or revs[0] <= since:
            self.problems.append(f"round {self._round}: resumed watch out of order: {revs[:20]}")
        seen = set(after.events)
        missing = [(k, rv) for k, rv in self.acked_log
                   if since < rv <= marker[1] and (k, rv) not in seen]
        if missing:
            self.problems.append(f"round {self._round}: resumed watch from {since} "
                                 f"missed {len(missing)} acknowledged writes, e.g. {missing[:3]}")
        self.watch_events += len(after.events)

    async def _watch_until(self, s: aiohttp.ClientSession, w: Watched, rv: int) -> None:
        watcher = asyncio.create_task(self._watch(s, w))
        try:
            while not watcher.done() and w.last < rv:
                await asyncio.sleep(0.02)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    def figures(self) -> dict[str, float]:
        return {"rounds": self._round, "writes_acknowledged": self.writes,
                "lost": self.lost,
                "watch_410": self.watch_gone,
                "watch_events_checked": self.watch_events,
                "ready_after_restart_median": sorted(self.ready_times)[len(self.ready_times) // 2]
                if self.ready_times else float("nan"),
                "ready_after_restart_max": max(self.ready_times, default=float("nan"))}


def _check_key(key: Key, acked: Acked | None, in_flight: dict[Key, dict | None],
               got: tuple[int, dict] | None) -> str:
    """'' if `got` (rv, data) or absence (None) is a state the answers allow, else why not."""
    allowed: list[str] = []
    if acked is None or acked.data is None:
        if got is None:
            return ""
        allowed.append("absent")
    elif got is not None and got == (acked.rv, acked.data):
        return ""
    else:
        allowed.append(f"rv {acked.rv} data {acked.data}")
    if key in in_flight:
        leaves = in_flight[key]
        floor = acked.rv if acked else 0
        if leaves is None and got is None:
            return ""
        if leaves is not None and got is not None and got[1] == leaves and got[0] > floor:
            return ""
        allowed.append(f"its in-flight write's {leaves}")
    what = "lost" if got is None else "changed"
    return f"{key} {what}: found {got}, allowed {' or '.join(allowed)}"

