"""A real Registry on a temporary SQLite store plus a ControllerContext, for driving the core
controllers and the scheduler in unit tests (in-process, no server)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import pytest

from k3py.api.resources import builtin_registry
from k3py.server.controllers.base import ControllerContext, EventRecorder, InformerFactory
from k3py.server.registry import Registry
from k3py.server.store.sqlite import SQLiteBackend

pytestmark = pytest.mark.unit


class Cluster:
    def __init__(self, registry: Registry, ctx: ControllerContext) -> None:
        self.registry = registry
        self.ctx = ctx
        self.controllers: list = []

    def res(self, plural: str, group: str = ""):
        return self.registry.resources.find(group, plural)

    async def create(self, plural: str, obj: dict, group: str = "", ns: str | None = None):
        res = self.res(plural, group)
        ns = ns or ((obj.get("metadata") or {}).get("namespace") or
                    ("default" if res.namespaced else None))
        return await self.registry.create(res, ns, obj)

    async def get(self, plural: str, ns: str | None, name: str, group: str = ""):
        return await self.registry.try_get(self.res(plural, group), ns, name)

    async def list(self, plural: str, ns: str | None = None, group: str = "") -> list[dict]:
        return (await self.registry.list(self.res(plural, group), ns))["items"]

    async def delete(self, plural: str, ns: str | None, name: str, group: str = "",
                     **options):
        return await self.registry.delete(self.res(plural, group), ns, name, options)

    async def start(self, cls, **extra) -> object:
        self.ctx.extra.update(extra)
        c = cls(self.ctx)
        await c.start()
        self.controllers.append(c)
        return c


async def eventually(fn: Callable, timeout: float = 5.0, what: str = "condition"):
    """Poll an async or sync predicate until truthy (tests never sleep as a wait)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@contextlib.asynccontextmanager
async def cluster(tmp_path, namespaces=("default", "kube-system", "kube-node-lease")):
    backend = SQLiteBackend(str(tmp_path / "state.db"), compact_interval=0,
                            checkpoint_interval=0)
    await backend.start()
    registry = Registry(backend, builtin_registry())
    informers = InformerFactory(registry)
    ctx = ControllerContext(registry=registry, informers=informers,
                            recorder=EventRecorder(registry), extra={})
    c = Cluster(registry, ctx)
    try:
        for ns in namespaces:
            await c.create("namespaces", {"metadata": {"name": ns}})
        yield c
    finally:
        for ctl in c.controllers:
            await ctl.stop()
        await informers.stop()
        await backend.close()


async def test_cluster_roundtrip(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await c.create("configmaps", {"metadata": {"name": "x"}, "data": {"a": "b"}})
        assert (await c.get("configmaps", "default", "x"))["data"] == {"a": "b"}
