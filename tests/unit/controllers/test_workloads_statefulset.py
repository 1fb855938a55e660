"""StatefulSet ordinal naming, OrderedReady creation, PVCs per ordinal and scale down order,
against the in-memory registry."""

from __future__ import annotations

import asyncio

import pytest

from k3py.server.controllers.statefulset import StatefulSetController, ordinal_of
from tests.unit.controllers.test_workloads_fakes import make_ctx, settle

pytestmark = pytest.mark.unit


def test_ordinal_of() -> None:
    assert ordinal_of("db", "db-3") == 3
    assert ordinal_of("db", "db-x") is None
    assert ordinal_of("db", "dbx-1") is None


async def test_ordered_ready() -> None:
    reg, ctx = make_ctx()
    c = StatefulSetController(ctx)
    await c.start()
    res = reg.resources.find("apps", "statefulsets")
    try:
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
        await settle(lambda: len(reg.all("pods")) == 1)
        await asyncio.sleep(0.1)
        assert [p["metadata"]["name"] for p in reg.all("pods")] == ["db-0"]
        p0 = reg.all("pods")[0]
        assert p0["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == "db-0"
        assert p0["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == "0"
        assert p0["spec"]["hostname"] == "db-0" and p0["spec"]["subdomain"] == "db"
        assert [x["metadata"]["name"] for x in reg.all("persistentvolumeclaims")] == \
            ["data-db-0"]
        await reg.set_pod_status("db-0")
        await settle(lambda: len(reg.all("pods")) == 2)
        await reg.set_pod_status("db-1")
        await settle(lambda: (reg.all("statefulsets")[0].get("status") or {})
                     .get("readyReplicas") == 2)
        sts = reg.all("statefulsets")[0]
        sts = dict(sts, spec=dict(sts["spec"], replicas=1))
        await reg.update(res, "default", "db", sts)
        await settle(lambda: [p["metadata"]["name"] for p in reg.all("pods")] == ["db-0"])
    finally:
        await c.stop()
        await ctx.informers.stop()
