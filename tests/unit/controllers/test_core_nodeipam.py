"""NodeIPAMController against a real Registry: each Node gets its own pod CIDR from the
cluster CIDR (one per family when dual-stack), keeps it across a restart of the controller,
frees it when deleted, and gets a CIDRNotAvailable Event when the range is full."""

from __future__ import annotations

import pytest

from k3py.config import ServerConfig
from k3py.server.controllers.nodeipam import CIDRAllocator, NodeIPAMController, parse_cluster_cidrs
from tests.unit.conftest import eventually

pytestmark = pytest.mark.unit


def test_allocator_hands_out_subnets_in_order_and_not_a_freed_one_at_once():
    a = CIDRAllocator(*parse_cluster_cidrs("10.42.0.0/22", 24), 24)
    got = [a.allocate() for _ in range(3)]
    assert got == ["10.42.0.0/24", "10.42.1.0/24", "10.42.2.0/24"]
    a.release("10.42.1.0/24")
    assert a.allocate() == "10.42.3.0/24"
    assert a.allocate() == "10.42.1.0/24"
    assert a.allocate() is None
    assert not a.occupy("10.43.0.0/24") and not a.occupy("10.42.0.0/25")
    assert a.index_of("10.42.3.0/24") == 3


def test_parse_cluster_cidrs_refuses_what_cannot_work():
    v4, v6 = parse_cluster_cidrs("10.42.0.0/16, fd42::/56", 24)
    assert str(v4) == "10.42.0.0/16" and str(v6) == "fd42::/56"
    for bad, mask in (("10.42.0.0/16,10.43.0.0/16", 24), ("10.42.0.0/25", 24),
                      ("fd42::/80", 24), ("", 24)):
        with pytest.raises(ValueError):
            parse_cluster_cidrs(bad, mask)


async def _cidr(env, name: str) -> list[str] | None:
    node = await env.registry.get(env.res("nodes"), None, name)
    return (node.get("spec") or {}).get("podCIDRs") or None


async def test_nodes_get_distinct_cidrs_kept_across_restart_and_freed(env):
    env.ctx.extra["cluster_cidr"] = "10.42.0.0/23"
    nodes = env.res("nodes")
    await env.registry.create(nodes, None, {"metadata": {"name": "a"}})
    await env.registry.create(nodes, None, {"metadata": {"name": "b"},
                                            "spec": {"podCIDR": "10.42.0.0/24",
                                                     "podCIDRs": ["10.42.0.0/24"]}})
    (ctl,) = await env.start(NodeIPAMController)
    assert await eventually(lambda: _cidr(env, "a"), timeout=5) == ["10.42.1.0/24"]
    node_a = await env.registry.get(nodes, None, "a")
    assert node_a["spec"]["podCIDR"] == "10.42.1.0/24"

    await env.registry.create(nodes, None, {"metadata": {"name": "c"}})

    async def full_event():
        return [e for e in await env.events(None) if e[0] == "c" and e[2] == "CIDRNotAvailable"]
    ev = await eventually(full_event, timeout=5)
    assert ev[0][1] == "Warning" and "10.42.0.0/23" in ev[0][3]

    await env.registry.delete(nodes, None, "a")
    # the waiting node gets the freed CIDR at once, not at its next retry
    assert await eventually(lambda: _cidr(env, "c"), timeout=5) == ["10.42.1.0/24"]
    await env.registry.delete(nodes, None, "c")
    await ctl.stop()
    env.controllers.remove(ctl)
    # a new controller (a server restart) marks what the stored Nodes hold first: a new node
    # gets the freed CIDR, and b keeps its own
    await env.registry.create(nodes, None, {"metadata": {"name": "d"}})
    await env.start(NodeIPAMController)
    assert await eventually(lambda: _cidr(env, "d"), timeout=5) == ["10.42.1.0/24"]
    assert await _cidr(env, "b") == ["10.42.0.0/24"]


async def test_cluster_cidr_and_mask_come_from_the_server_config(env):
    env.ctx.config = ServerConfig(cluster_cidr="10.60.0.0/16", node_cidr_mask_size=26)
    await env.registry.create(env.res("nodes"), None, {"metadata": {"name": "n"}})
    await env.registry.create(env.res("nodes"), None, {"metadata": {"name": "m"}})
    await env.start(NodeIPAMController)
    assert sorted([await eventually(lambda n=n: _cidr(env, n), timeout=5) for n in "nm"]) == \
        [["10.60.0.0/26"], ["10.60.0.64/26"]]


async def test_dual_stack_gets_one_cidr_per_family(env):
    env.ctx.extra["cluster_cidr"] = "10.42.0.0/16,fd42::/56"
    await env.registry.create(env.res("nodes"), None, {"metadata": {"name": "n"}})
    await env.start(NodeIPAMController)
    assert await eventually(lambda: _cidr(env, "n"), timeout=5) == ["10.42.0.0/24", "fd42::/64"]
