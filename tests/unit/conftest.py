"""Real parts for in-process unit tests: a Registry over a temporary SQLite store, a real
EventRecorder and InformerFactory in a ControllerContext, and the namespaces.

`env` is the fixture (`real_env` builds the same for a test that wants other namespaces or its
own helper class); `eventually` polls a (sync or async) predicate with a deadline;
`serve_app` serves an aiohttp app in-process on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

import pytest
from aiohttp import web

from k3py.api.resources import Resource, builtin_registry
from k3py.server.bootstrap import ensure_namespaces
from k3py.server.controllers.base import (
    Controller,
    ControllerContext,
    EventRecorder,
    InformerFactory,
)
from k3py.server.registry import Registry
from k3py.server.store.sqlite import SQLiteBackend

_GROUPS = {"replicasets": "apps", "deployments": "apps", "statefulsets": "apps",
           "daemonsets": "apps", "controllerrevisions": "apps", "jobs": "batch",
           "cronjobs": "batch"}


async def eventually(pred: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01,
                     what: str = "condition"):
    """Poll `pred` (which may return an awaitable) until it is truthy; fail at the deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = pred()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert loop.time() < end, f"timed out waiting for {what} (last: {value!r})"
        await asyncio.sleep(interval)


async def serve_app(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve `app` on 127.0.0.1 (a free port, plain HTTP); returns (runner, port): the caller
    awaits runner.cleanup()."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


class ControllerEnv:
    """The real registry and controller context, plus read helpers for assertions."""

    def __init__(self, backend: SQLiteBackend, registry: Registry,
                 ctx: ControllerContext) -> None:
        self.backend = backend
        self.registry = registry
        self.ctx = ctx
        self.resources = registry.resources
        self.controllers: list[Controller] = []

    def res(self, plural: str, group: str | None = None) -> Resource:
        found = self.resources.find(_GROUPS.get(plural, "") if group is None else group, plural)
        assert found is not None, plural
        return found

    async def start(self, *kinds: type[Controller]) -> list[Controller]:
        out = []
        for kind in kinds:
            c = kind(self.ctx)
            await c.start()
            self.controllers.append(c)
            out.append(c)
        return out

    async def all(self, plural: str, ns: str | None = "default") -> list[dict]:
        return (await self.registry.list(self.res(plural), ns))["items"]

    async def events(self, ns: str | None = None) -> list[tuple[str, str, str, str]]:
        """(involved object name, type, reason, message) per recorded occurrence: the recorder
        aggregates repeats into `count`, so each Event is expanded back to `count` entries."""
        out = []
        for ev in await self.all("events", ns):
            t = ((ev.get("involvedObject") or {}).get("name"), ev.get("type"), ev.get("reason"),
                 ev.get("message"))
            out.extend([t] * int(ev.get("count") or 1))
        return out

    async def set_pod_status(self, name: str, ns: str = "default", phase: str = "Running",
                             ready: bool = True, **extra) -> None:
        def mutate(p: dict) -> dict:
            st = p.get("status") or {}
            p["status"] = st
            st["phase"] = phase
            st["conditions"] = [{"type": "Ready", "status": "True" if ready else "False",
                                 "lastTransitionTime": "2000-01-01T00:00:00Z"}]
            st.update(extra)
            return p
        out = await self.registry.update_with(self.res("pods"), ns, name, mutate,
                                              subresource="status")
        assert out is not None, f"pod {ns}/{name} is gone"

    async def close(self) -> None:
        for c in reversed(self.controllers):
            await c.stop()
        await self.ctx.informers.stop()


E = TypeVar("E", bound=ControllerEnv)


@contextlib.asynccontextmanager
async def real_env(tmp_path, namespaces: Iterable[str] | None = None,
                   env_class: type[E] = ControllerEnv) -> AsyncIterator[E]:
    """A registry on a fresh SQLite store (no background compaction or checkpoints) with the
    system namespaces (`ensure_namespaces`), or just `namespaces` when given."""
    backend = SQLiteBackend(str(tmp_path / "state.db"), compact_interval=0,
                            checkpoint_interval=0)
    await backend.start()
    registry = Registry(backend, builtin_registry())
    ctx = ControllerContext(registry=registry, informers=InformerFactory(registry),
                            recorder=EventRecorder(registry))
    e = env_class(backend, registry, ctx)
    try:
        if namespaces is None:
            await ensure_namespaces(registry)
        else:
            ns_res = e.res("namespaces")
            for name in namespaces:
                await registry.create(ns_res, None, {"metadata": {"name": name}})
        yield e
    finally:
        await e.close()
        await backend.close()


@pytest.fixture
async def env(tmp_path):
    async with real_env(tmp_path) as e:
        yield e
