"""The scheduler in a process of its own, as upstream's kube-scheduler beside the apiserver:
the server starts and watches it (SchedulerProcess), the child (run_scheduler_process, the
hidden `k3py scheduler-process` command) schedules through the API over loopback HTTPS.

Why: scheduling a pod costs ~1.3 ms of CPU, which in the server's process is taken from its
one event loop; in the child it runs on another core and the server only serves the Binding
and Event POSTs and one more pod watch (docs/design/scheduler.md has the figures).
The child reads its settings (API URL, CA, a client certificate of user system:kube-scheduler,
the Lease times) as one JSON line on stdin and keeps stdin open: when the server exits, even
by SIGKILL, the pipe closes and the child stops. Its stderr is the server's (one log)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass

import orjson

__all__ = ["SchedulerProcess", "SchedulerSettings", "SCHEDULER_USER", "SUBCOMMAND",
           "run_scheduler_process"]

log = logging.getLogger("k3py.scheduler")

SCHEDULER_USER = "system:kube-scheduler"  # upstream's user, bound to its ClusterRole
SUBCOMMAND = "scheduler-process"  # the hidden `k3py` command of the child
RESTART_BACKOFF_MAX = 30.0  # seconds between restarts of a child that keeps dying
STEADY_AFTER = 60.0  # a child that ran this long is restarted at once when it exits
STOP_GRACE = 5.0  # seconds for the child to exit on SIGTERM before SIGKILL
_SETTINGS_MAX = 1 << 20  # bytes of the settings line the child reads


@dataclass(frozen=True)
class SchedulerSettings:
    """What the child needs, sent once over stdin (the key never touches the disk)."""
    url: str
    ca_pem: str
    cert_pem: str
    key_pem: str
    lease_name: str = ""  # "" when alone on its datastore: no election
    identity: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    debug: bool = False


def child_command() -> list[str]:
    """The child's command line: in the PyInstaller binary sys.executable is k3py itself."""
    if getattr(sys, "frozen", False):
        return [sys.executable, SUBCOMMAND]
    return [sys.executable, "-m", "k3py", SUBCOMMAND]


class SchedulerProcess:
    """Runs the child for as long as the server runs, restarting it when it exits."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task | None = None
        self.restarts = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="scheduler-process")

    async def _spawn(self) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *child_command(), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL, stderr=None)
        assert proc.stdin is not None
        proc.stdin.write(orjson.dumps(asdict(self.settings)) + b"\n")
        await proc.stdin.drain()
        return proc

    async def _supervise(self) -> None:
        backoff = 1.0
        while True:
            started = time.monotonic()
            try:
                self.proc = await self._spawn()
                code = await self.proc.wait()
            except (OSError, ConnectionError) as e:
                code = repr(e)
            if time.monotonic() - started >= STEADY_AFTER:
                backoff = 1.0
            log.warning("the scheduler process exited (%s); starting it again in %.0f s",
                        code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX)
            self.restarts += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


# ---------------------------------------------------------------- the child

def run_scheduler_process() -> int:
    """`k3py scheduler-process`: blocking; 0 when the server closed stdin or on SIGTERM."""
    line = sys.stdin.buffer.readline(_SETTINGS_MAX)
    try:
        settings = SchedulerSettings(**orjson.loads(line))
    except (orjson.JSONDecodeError, TypeError) as e:
        print(f"k3py: error: {SUBCOMMAND} is started by `k3py server` ({e})", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.DEBUG if settings.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s[scheduler]: %(message)s")
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is optional on exotic platforms
        pass
    try:
        asyncio.run(_schedule(settings))
    except KeyboardInterrupt:
        pass
    return 0


async def _server_gone() -> None:
    """Returns when stdin reaches EOF: the server closed it or died."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def _schedule(settings: SchedulerSettings) -> None:
    import signal

    import aiohttp

    from k3py.api.resources import builtin_registry
    from k3py.pki import client_ssl_context
    from k3py.server.controllers.base import ControllerContext, EventRecorder, InformerFactory
    from k3py.server.controllers.manager import SCHEDULER, start_group
    from k3py.server.leaderelection import ElectionTimes, LeaderElector
    from k3py.server.scheduler.apiclient import CONNECTIONS, ApiClient

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ssl_ctx = client_ssl_context(settings.ca_pem.encode(), settings.cert_pem.encode(),
                                 settings.key_pem.encode())
    connector = aiohttp.TCPConnector(ssl=ssl_ctx, limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        client = ApiClient(settings.url, session, builtin_registry())
        informers = InformerFactory(client)  # type: ignore[arg-type]
        ctx = ControllerContext(registry=client, informers=informers,  # type: ignore[arg-type]
                                recorder=EventRecorder(client))  # type: ignore[arg-type]
        start = functools.partial(start_group, ctx, SCHEDULER)
        if settings.lease_name:
            running = LeaderElector(client, settings.lease_name,  # type: ignore[arg-type]
                                    settings.identity, start_group=start,
                                    times=ElectionTimes(settings.lease_duration,
                                                        settings.renew_deadline,
                                                        settings.retry_period))
            running.start()
        else:
            running = await start()
        log.info("scheduling through %s (pid %d)", settings.url, os.getpid())
        gone = asyncio.create_task(_server_gone())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait((gone, stopped), return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        stopped.cancel()
        with contextlib.suppress(Exception):
            await running.stop()
        await informers.stop()
