"""NamespaceController and ServiceAccountController on a real in-process Registry."""

import pytest

from k3py.server.controllers.namespace import NamespaceController
from k3py.server.controllers.serviceaccount import ServiceAccountController
from tests.unit.controllers.test_core_support import cluster, eventually

pytestmark = pytest.mark.unit


async def test_system_namespaces_created(tmp_path) -> None:
    async with cluster(tmp_path, namespaces=()) as c:
        await c.start(NamespaceController)
        names = {n["metadata"]["name"] for n in await c.list("namespaces")}
        assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names


async def test_namespace_deletion_removes_content_then_namespace(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await c.start(NamespaceController)
        await c.create("namespaces", {"metadata": {"name": "team"}})
        await c.create("configmaps", {"metadata": {"name": "cm", "namespace": "team"}})
        await c.create("pods", {"metadata": {"name": "p", "namespace": "team"},
                                "spec": {"containers": [{"name": "c", "image": "x"}]}})
        await c.create("deployments", {
            "metadata": {"name": "d", "namespace": "team"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]}}}}, group="apps")
        # a finalizer holds one object until someone removes it
        await c.create("secrets", {"metadata": {"name": "held", "namespace": "team",
                                                "finalizers": ["example.com/hold"]}})
        out = await c.delete("namespaces", None, "team")
        assert out["status"]["phase"] == "Terminating"

        async def content_gone():
            return not await c.list("configmaps", "team") and not await c.list("pods", "team") \
                and not await c.list("deployments", "team", group="apps")
        await eventually(content_gone)

        async def remaining_condition():
            ns = await c.get("namespaces", None, "team")
            return [x for x in (ns.get("status") or {}).get("conditions") or []
                    if x["type"] == "NamespaceContentRemaining" and x["status"] == "True"]
        cond = (await eventually(remaining_condition))[0]
        assert cond["message"] == "Some resources are remaining: secrets has 1 resource instances"
        assert await c.get("namespaces", None, "team") is not None

        res = c.res("secrets")

        def unhold(s):
            s["metadata"]["finalizers"] = []
            return s
        await c.registry.update_with(res, "team", "held", unhold)

        async def ns_gone():
            return await c.get("namespaces", None, "team") is None
        await eventually(ns_gone, timeout=8)


async def test_default_service_account(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await c.start(ServiceAccountController)
        await c.create("namespaces", {"metadata": {"name": "apps"}})

        async def sa():
            return await c.get("serviceaccounts", "apps", "default")
        await eventually(sa)
        assert await c.get("serviceaccounts", "default", "default")
        await c.delete("serviceaccounts", "apps", "default")
        await eventually(sa)
