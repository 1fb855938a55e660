"""Container probes (startup, liveness, readiness) as the kubelet runs them.

One `ContainerProbes` per running container instance that has probes: an asyncio task per
probe kind, each sleeping its periodSeconds between checks (nothing runs for containers without
probes, so an idle agent stays idle). The startup probe gates the other two; readiness flips
`ready`, liveness failing `failureThreshold` times in a row asks the syncer to kill the container
(which then restarts it through its usual restart path)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable

import aiohttp

__all__ = ["ContainerProbes", "probe_params", "resolve_port", "check"]

log = logging.getLogger("k3py.probes")

KINDS = ("startupProbe", "livenessProbe", "readinessProbe")
_LABEL = {"startupProbe": "Startup", "livenessProbe": "Liveness", "readinessProbe": "Readiness"}


def probe_params(probe: dict) -> dict:
    """The probe's timing with the Kubernetes defaults filled in (and nonsense clamped)."""
    def num(key: str, default: int, low: int) -> int:
        try:
            return max(low, int(probe.get(key, default)))
        except (TypeError, ValueError):
            return default
    return {"initialDelaySeconds": num("initialDelaySeconds", 0, 0),
            "periodSeconds": num("periodSeconds", 10, 1),
            "timeoutSeconds": num("timeoutSeconds", 1, 1),
            "successThreshold": num("successThreshold", 1, 1),
            "failureThreshold": num("failureThreshold", 3, 1)}


def resolve_port(port, container: dict) -> int | None:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        for p in container.get("ports") or []:
            if p.get("name") == port and p.get("containerPort"):
                return int(p["containerPort"])
    return None


_insecure: ssl.SSLContext | None = None


def _insecure_context() -> ssl.SSLContext:
    """HTTPS probes do not verify (as the kubelet); made on first use: a context with the
    system CAs loaded costs memory an agent without HTTPS probes need not pay."""
    global _insecure
    if _insecure is None:
        _insecure = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _insecure.check_hostname = False
        _insecure.verify_mode = ssl.CERT_NONE
    return _insecure

ExecFn = Callable[[list[str], float], Awaitable[tuple[int, str]]]


async def check(probe: dict, *, container: dict, host: str, exec_fn: ExecFn,
                timeout: float) -> tuple[bool, str]:
    """Run one probe once: (success, what failed)."""
    if probe.get("exec") is not None:
        cmd = [str(a) for a in probe["exec"].get("command") or []]
        try:
            rc, out = await exec_fn(cmd, timeout)
        except TimeoutError:
            return False, f'command "{" ".join(cmd)}" timed out'
        if rc == 0:
            return True, ""
        return False, out.strip() or f'command "{" ".join(cmd)}" exited with {rc}'
    if probe.get("httpGet") is not None:
        h = probe["httpGet"]
        port = resolve_port(h.get("port"), container)
        if port is None:
            return False, f"unknown port {h.get('port')!r}"
        scheme = (h.get("scheme") or "HTTP").lower()
        target = h.get("host") or host
        path = h.get("path") or "/"
        url = f"{scheme}://{target}:{port}{path if path.startswith('/') else '/' + path}"
        headers = {x["name"]: x.get("value", "") for x in h.get("httpHeaders") or []
                   if x.get("name")}
        headers.setdefault("User-Agent", "kube-probe/1.37")
        try:
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                    session.get(url, headers=headers, allow_redirects=False,
                                ssl=_insecure_context() if scheme == "https" else None) as resp:
                await resp.read()
                if 200 <= resp.status < 400:
                    return True, ""
                return False, f"HTTP probe failed with statuscode: {resp.status}"
        except TimeoutError:
            return False, f'Get "{url}": context deadline exceeded'
        except (aiohttp.ClientError, OSError) as e:
            return False, f'Get "{url}": {e}'
    if probe.get("tcpSocket") is not None:
        t = probe["tcpSocket"]
        port = resolve_port(t.get("port"), container)
        if port is None:
            return False, f"unknown port {t.get('port')!r}"
        target = t.get("host") or host
        try:
            async with asyncio.timeout(timeout):
                _, writer = await asyncio.open_connection(target, port)
        except TimeoutError:
            return False, f"dial tcp {target}:{port}: i/o timeout"
        except OSError as e:
            return False, f"dial tcp {target}:{port}: {e.strerror or e}"
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return True, ""
    return True, ""  # a probe without a handler (e.g. grpc, not supported) never fails


class ContainerProbes:
    """The probes of one container instance. `on_change()` is called when `started` or
    `ready` flips, `on_unhealthy(kind, message)` on each failed check (for the Unhealthy
    event), `on_kill(message)` once when liveness (or startup) gives up."""

    def __init__(self, container: dict, *, host: str, exec_fn: ExecFn,
                 on_change: Callable[[], None],
                 on_unhealthy: Callable[[str, str], None],
                 on_kill: Callable[[str], None]) -> None:
        self.container = container
        self.host = host
        self.exec_fn = exec_fn
        self.on_change, self.on_unhealthy, self.on_kill = on_change, on_unhealthy, on_kill
        self.started = container.get("startupProbe") is None
        self.ready = container.get("readinessProbe") is None
        self._tasks: list[asyncio.Task] = []
        self._killed = False

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name="probes"))

    def stop(self) -> None:
        for t in self._tasks:
            t.cancel()

    async def _run(self) -> None:
        if not self.started:
            if not await self._loop("startupProbe"):
                return
            self.started = True
            self.on_change()
        kinds = [k for k in ("livenessProbe", "readinessProbe") if self.container.get(k)]
        self._tasks += [asyncio.create_task(self._loop(k), name=k) for k in kinds]

    async def _loop(self, kind: str) -> bool:
        """Probe until it has a verdict: startup → True once it succeeded, False when it
        gave up; liveness/readiness run until cancelled or the container is killed."""
        probe = self.container[kind]
        p = probe_params(probe)
        await asyncio.sleep(p["initialDelaySeconds"])
        ok_run = fail_run = 0
        while not self._killed:
            try:
                ok, why = await check(probe, container=self.container, host=self.host,
                                      exec_fn=self.exec_fn, timeout=p["timeoutSeconds"])
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a probe error counts as a failure
                ok, why = False, str(e)
            if ok:
                ok_run, fail_run = ok_run + 1, 0
            else:
                ok_run, fail_run = 0, fail_run + 1
                self.on_unhealthy(kind, f"{_LABEL[kind]} probe failed: {why}")
            if kind == "startupProbe":
                if ok:
                    return True
                if fail_run >= p["failureThreshold"]:
                    self._kill("Container failed startup probe, will be restarted")
                    return False
            elif kind == "livenessProbe":
                if fail_run >= p["failureThreshold"]:
                    self._kill("Container failed liveness probe, will be restarted")
                    return False
            else:
                ready = self.ready
                if ok and ok_run >= p["successThreshold"]:
                    ready = True
                elif not ok and fail_run >= p["failureThreshold"]:
                    ready = False
                if ready != self.ready:
                    self.ready = ready
                    self.on_change()
            await asyncio.sleep(p["periodSeconds"])
        return False

    def _kill(self, message: str) -> None:
        if not self._killed:
            self._killed = True
            self.ready = False
            self.on_kill(message)
