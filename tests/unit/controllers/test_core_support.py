"""A real Registry on a temporary SQLite store plus a ControllerContext, for driving the core
controllers and the scheduler in unit tests (in-process, no server)."""

from __future__ import annotations

import pytest

from tests.unit.conftest import ControllerEnv, eventually, real_env

__all__ = ["Cluster", "cluster", "eventually"]

pytestmark = pytest.mark.unit


class Cluster(ControllerEnv):
    """`ControllerEnv` with write helpers that take a plural (and group) instead of a Resource."""

    async def create(self, plural: str, obj: dict, group: str | None = None,
                     ns: str | None = None):
        res = self.res(plural, group)
        ns = ns or ((obj.get("metadata") or {}).get("namespace") or
                    ("default" if res.namespaced else None))
        return await self.registry.create(res, ns, obj)

    async def get(self, plural: str, ns: str | None, name: str, group: str | None = None):
        return await self.registry.try_get(self.res(plural, group), ns, name)

    async def list(self, plural: str, ns: str | None = None,
                   group: str | None = None) -> list[dict]:
        return (await self.registry.list(self.res(plural, group), ns))["items"]

    async def delete(self, plural: str, ns: str | None, name: str, group: str | None = None,
                     **options):
        return await self.registry.delete(self.res(plural, group), ns, name, options)

    async def start(self, cls, **extra) -> object:  # type: ignore[override]
        self.ctx.extra.update(extra)
        return (await super().start(cls))[0]


def cluster(tmp_path, namespaces=("default", "kube-system", "kube-node-lease")):
    return real_env(tmp_path, namespaces, Cluster)


async def test_cluster_roundtrip(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await c.create("configmaps", {"metadata": {"name": "x"}, "data": {"a": "b"}})
        assert (await c.get("configmaps", "default", "x"))["data"] == {"a": "b"}
