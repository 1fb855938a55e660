"""The informer's cached form of an object against a real Registry: without managedFields,
and after a status write the unchanged spec is the previous revision's own (not walked again)."""

from __future__ import annotations

import pytest

from k3py.server.controllers.base import cached_form
from tests.unit.conftest import eventually

pytestmark = pytest.mark.unit

POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "p", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "env": [
           {"name": "A", "value": "1"}]}], "nodeSelector": {"nobody": "x"}}}


async def test_a_status_write_keeps_the_cached_spec(env) -> None:
    res = env.res("pods")
    pods = env.ctx.informers.informer("", "pods")
    await env.registry.create(res, "default", POD, field_manager="test")
    first = await eventually(lambda: pods.get("default", "p"))
    assert "managedFields" not in first["metadata"]

    def mutate(pod: dict) -> dict:
        pod["status"] = {"phase": "Pending", "conditions": [{"type": "PodScheduled",
                                                            "status": "False"}]}
        return pod
    written = await env.registry.update_with(res, "default", "p", mutate, subresource="status")
    rv = written["metadata"]["resourceVersion"]
    second = await eventually(
        lambda: (o := pods.get("default", "p")) and o["metadata"]["resourceVersion"] == rv and o)
    assert second["spec"] is first["spec"]
    assert second["metadata"]["labels"] is first["metadata"]["labels"]
    fresh = await env.registry.get(res, "default", "p")
    assert second == cached_form(fresh)  # the same object as one cached without a previous
    assert second["status"]["phase"] == "Pending" and first.get("status") != second["status"]
