"""The `kubernetes` Service's endpoints with several servers (controllers/apiendpoints.py): each
server's Lease adds its address, a clean stop removes it, a Lease not renewed in time drops out."""

from __future__ import annotations

import pytest

from k3py.server.controllers.apiendpoints import APIServerEndpoints

pytestmark = pytest.mark.unit


async def _addresses(env) -> list[str]:
    ep = await env.registry.get(env.res("endpoints"), "default", "kubernetes")
    return [a["ip"] for a in ep["subsets"][0]["addresses"]]


async def _slice(env) -> list[str]:
    es = await env.registry.get(env.res("endpointslices", "discovery.k8s.io"), "default",
                                "kubernetes")
    return [ep["addresses"][0] for ep in es["endpoints"]]


async def test_every_live_server_is_an_endpoint(env):
    a = APIServerEndpoints(env.registry, "aaaa", "10.0.0.2", 6443)
    b = APIServerEndpoints(env.registry, "bbbb", "10.0.0.1", 6443)
    await a.start()
    await b.start()
    assert await _addresses(env) == ["10.0.0.1", "10.0.0.2"]
    assert await _slice(env) == ["10.0.0.1", "10.0.0.2"]
    await b.stop()  # a clean stop leaves at once
    assert await _addresses(env) == ["10.0.0.2"]
    # a server that died: its Lease is no longer renewed and drops out after its duration
    c = APIServerEndpoints(env.registry, "cccc", "10.0.0.3", 6443)
    await c.start()
    assert await _addresses(env) == ["10.0.0.2", "10.0.0.3"]
    c._task.cancel()
    leases = env.res("leases", "coordination.k8s.io")
    lease = await env.registry.get(leases, "kube-system", "apiserver-cccc")
    lease["spec"]["renewTime"] = "2020-01-01T00:00:00.000000Z"
    await env.registry.update(leases, "kube-system", "apiserver-cccc", lease)
    await a.tick()
    assert await _addresses(env) == ["10.0.0.2"]
    await a.stop()
