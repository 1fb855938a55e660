"""StatefulSet ordinal naming, OrderedReady creation, PVCs per ordinal and scale down order,
against the real registry."""

from __future__ import annotations

import asyncio

import pytest

from k3py.server.controllers.statefulset import StatefulSetController, ordinal_of
from tests.unit.controllers.conftest import eventually

pytestmark = pytest.mark.unit


def test_ordinal_of() -> None:
    assert ordinal_of("db", "db-3") == 3
    assert ordinal_of("db", "db-x") is None
    assert ordinal_of("db", "dbx-1") is None


async def test_ordered_ready(env) -> None:
    await env.start(StatefulSetController)
    reg = env.registry
    res = env.res("statefulsets")

    async def pod_names() -> list[str]:
        return [p["metadata"]["name"] for p in await env.all("pods")]

    async def n_pods(n: int) -> bool:
        return len(await pod_names()) == n

    await reg.create(res, "default", {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": {"replicas": 2, "serviceName": "db",
                 "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}},
                              "spec": {"containers": [{"name": "c", "image": "x"}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                     "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}]}})
    await eventually(lambda: n_pods(1))
    await asyncio.sleep(0.1)  # OrderedReady: db-1 must not appear while db-0 is not ready
    assert await pod_names() == ["db-0"]
    p0 = (await env.all("pods"))[0]
    assert p0["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == "db-0"
    assert p0["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == "0"
    assert p0["spec"]["hostname"] == "db-0" and p0["spec"]["subdomain"] == "db"
    assert [x["metadata"]["name"] for x in await env.all("persistentvolumeclaims")] == \
        ["data-db-0"]
    await env.set_pod_status("db-0")
    await eventually(lambda: n_pods(2))
    await env.set_pod_status("db-1")

    async def ready2() -> bool:
        return ((await env.all("statefulsets"))[0].get("status") or {}).get("readyReplicas") == 2
    await eventually(ready2)
    sts = (await env.all("statefulsets"))[0]
    sts = dict(sts, spec=dict(sts["spec"], replicas=1))
    await reg.update(res, "default", "db", sts)

    async def only_db0() -> bool:
        return await pod_names() == ["db-0"]
    await eventually(only_db0)
