"""An in-memory Registry stand-in for driving workload controllers in unit tests.

Mimics create/get/list/update_with/delete/watch semantics closely enough for informers."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from k3py.api import errors
from k3py.api.objects import deepcopy, new_uid, now_rfc3339
from k3py.api.resources import builtin_registry
from k3py.server.controllers.base import ControllerContext, InformerFactory

pytestmark = pytest.mark.unit


class FakeRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []

    async def record(self, obj, type_, reason, message, component=None) -> None:
        self.events.append((obj["metadata"]["name"], type_, reason, message))


class FakeRegistry:
    def __init__(self) -> None:
        self.resources = builtin_registry()
        self.objs: dict[tuple[str, str | None, str], dict] = {}
        self.rev = 1
        self.watchers: dict[str, list[asyncio.Queue]] = {}
        self.creates: dict[str, int] = {}

    def _emit(self, plural: str, etype: str, obj: dict) -> None:
        for q in self.watchers.get(plural, []):
            q.put_nowait((etype, deepcopy(obj)))

    def _bump(self, obj: dict) -> None:
        self.rev += 1
        obj["metadata"]["resourceVersion"] = str(self.rev)

    async def get(self, res, ns, name) -> dict:
        obj = self.objs.get((res.plural, ns if res.namespaced else None, name))
        if obj is None:
            raise errors.not_found(res.group, res.plural, name)
        return deepcopy(obj)

    async def try_get(self, res, ns, name) -> dict | None:
        obj = self.objs.get((res.plural, ns if res.namespaced else None, name))
        return deepcopy(obj) if obj else None

    async def list(self, res, ns, *a, **kw) -> dict:
        items = [deepcopy(o) for (p, n, _), o in self.objs.items()
                 if p == res.plural and (ns is None or n == ns)]
        return {"metadata": {"resourceVersion": str(self.rev)}, "items": items}

    async def watch(self, res, ns, resource_version: str = "", **kw):
        q: asyncio.Queue = asyncio.Queue()
        self.watchers.setdefault(res.plural, []).append(q)

        async def gen():
            while True:
                yield await q.get()
        return gen()

    async def create(self, res, ns, obj: dict, **kw) -> dict:
        obj = deepcopy(obj)
        md = obj.setdefault("metadata", {})
        if res.namespaced:
            md["namespace"] = md.get("namespace") or ns
        if not md.get("name"):
            md["name"] = md["generateName"] + "".join(random.choices("bcdfghjklmn", k=5))
        key = (res.plural, md.get("namespace") if res.namespaced else None, md["name"])
        if key in self.objs:
            raise errors.already_exists(res.group, res.plural, md["name"])
        obj.setdefault("apiVersion", res.api_version)
        obj.setdefault("kind", res.kind)
        md["uid"] = new_uid()
        md["creationTimestamp"] = now_rfc3339()
        md["generation"] = 1
        self._bump(obj)
        self.objs[key] = obj
        self.creates[res.plural] = self.creates.get(res.plural, 0) + 1
        self._emit(res.plural, "ADDED", obj)
        return deepcopy(obj)

    async def update_with(self, res, ns, name, mutate: Callable, *, subresource: str = "",
                          **kw) -> dict | None:
        key = (res.plural, ns if res.namespaced else None, name)
        cur = self.objs.get(key)
        if cur is None:
            return None
        new = mutate(deepcopy(cur))
        if new is None:
            return None
        if subresource == "status":
            out = deepcopy(cur)
            out["status"] = new.get("status")
        else:
            out = new
            if cur.get("status") is not None:
                out["status"] = cur.get("status")
            if new.get("spec") != cur.get("spec"):
                out["metadata"]["generation"] = cur["metadata"].get("generation", 1) + 1
        self._bump(out)
        self.objs[key] = out
        self._emit(res.plural, "MODIFIED", out)
        return deepcopy(out)

    async def update(self, res, ns, name, obj, *, subresource: str = "", **kw) -> dict:
        out = await self.update_with(res, ns, name, lambda cur: deepcopy(obj),
                                     subresource=subresource)
        if out is None:
            raise errors.not_found(res.group, res.plural, name)
        return out

    async def delete(self, res, ns, name, options: dict | None = None, **kw) -> dict:
        key = (res.plural, ns if res.namespaced else None, name)
        cur = self.objs.get(key)
        if cur is None:
            raise errors.not_found(res.group, res.plural, name)
        pre = (options or {}).get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != cur["metadata"]["uid"]:
            raise errors.conflict(res.group, res.plural, name, "uid precondition")
        del self.objs[key]
        self._bump(cur)
        self._emit(res.plural, "DELETED", cur)
        # owner-reference cascade (a tiny garbage collector)
        uid = cur["metadata"]["uid"]
        for k, o in list(self.objs.items()):
            if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or []):
                r2 = self.resources.find(self._group_of(k[0]), k[0])
                if r2 is not None and k in self.objs:
                    await self.delete(r2, k[1], k[2])
        return cur

    def _group_of(self, plural: str) -> str:
        return {"replicasets": "apps", "deployments": "apps", "statefulsets": "apps",
                "daemonsets": "apps", "controllerrevisions": "apps", "jobs": "batch",
                "cronjobs": "batch"}.get(plural, "")

    # -------------------------------------------------------------- test helpers

    def all(self, plural: str, ns: str | None = "default") -> list[dict]:
        return [o for (p, n, _), o in self.objs.items() if p == plural and n == ns]

    async def set_pod_status(self, name: str, ns: str = "default", phase: str = "Running",
                             ready: bool = True, **extra) -> None:
        res = self.resources.find("", "pods")

        def mutate(p: dict) -> dict:
            st = p.get("status") or {}
            p["status"] = st
            st["phase"] = phase
            st["conditions"] = [{"type": "Ready", "status": "True" if ready else "False",
                                 "lastTransitionTime": "2000-01-01T00:00:00Z"}]
            st.update(extra)
            return p
        await self.update_with(res, ns, name, mutate, subresource="status")


def make_ctx() -> tuple[FakeRegistry, ControllerContext]:
    reg = FakeRegistry()
    ctx = ControllerContext(registry=reg, informers=InformerFactory(reg),  # type: ignore[arg-type]
                            recorder=FakeRecorder())  # type: ignore[arg-type]
    return reg, ctx


async def settle(pred: Callable[[], bool], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if pred():
            return
        await asyncio.sleep(0.01)
    assert pred(), "condition not reached"


async def test_fake_registry_roundtrip() -> None:
    reg, _ = make_ctx()
    res = reg.resources.find("", "pods")
    p = await reg.create(res, "default", {"metadata": {"generateName": "x-"}})
    assert p["metadata"]["name"].startswith("x-")
    await reg.delete(res, "default", p["metadata"]["name"])
    assert reg.all("pods") == []
