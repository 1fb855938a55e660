"""Leader election over a Lease (k3py/server/leaderelection.py), two electors on one registry:
one leads at a time; when the leader dies another takes over, when it stops it releases the
Lease at once; a controller group stopped with its leadership leaves no informer handler."""

from __future__ import annotations

import asyncio

import pytest

from k3py.server.controllers.manager import start_group
from k3py.server.controllers.replicaset import ReplicaSetController
from k3py.server.leaderelection import ElectionTimes, LeaderElector
from tests.unit.conftest import eventually

pytestmark = pytest.mark.unit

TIMES = ElectionTimes(lease_duration=0.6, renew_deadline=0.4, retry_period=0.05)


class Group:
    def __init__(self, log: list[str], who: str) -> None:
        self.log, self.who = log, who

    async def stop(self) -> None:
        self.log.append(f"{self.who} stopped")


def _elector(env, who: str, log: list[str]) -> LeaderElector:
    async def start() -> Group:
        log.append(f"{who} started")
        return Group(log, who)
    return LeaderElector(env.registry, "kube-controller-manager", who, start, TIMES)


async def _holder(env) -> str:
    lease = await env.registry.get(env.res("leases", "coordination.k8s.io"), "kube-system",
                                   "kube-controller-manager")
    return lease["spec"]["holderIdentity"]


async def test_one_leader_and_a_takeover_when_it_dies(env):
    log: list[str] = []
    a, b = _elector(env, "a", log), _elector(env, "b", log)
    a.start()
    await a.leading.wait()
    b.start()
    await asyncio.sleep(TIMES.lease_duration / 2)
    assert log == ["a started"] and not b.leading.is_set()
    a._task.cancel()  # dies: no release, its Lease simply stops being renewed
    await asyncio.wait_for(b.leading.wait(), 5)
    assert log == ["a started", "b started"]
    assert await _holder(env) == "b"
    lease = await env.registry.get(env.res("leases", "coordination.k8s.io"), "kube-system",
                                   "kube-controller-manager")
    assert lease["spec"]["leaseTransitions"] == 1
    await b.stop()
    assert log[-1] == "b stopped"


async def test_stopping_the_leader_releases_the_lease_at_once(env):
    log: list[str] = []
    slow = ElectionTimes(lease_duration=60, renew_deadline=40, retry_period=0.05)
    a = LeaderElector(env.registry, "kube-scheduler", "a", lambda: _started(log, "a"), slow)
    b = LeaderElector(env.registry, "kube-scheduler", "b", lambda: _started(log, "b"), slow)
    a.start()
    await a.leading.wait()
    b.start()
    await a.stop()
    await asyncio.wait_for(b.leading.wait(), 5)  # long before the 60 s lease would expire
    await b.stop()
    assert log == ["a started", "b started"]


async def _started(log: list[str], who: str) -> Group:
    log.append(f"{who} started")
    return Group([], who)


async def test_a_stopped_group_removes_its_handlers(env):
    pods = env.ctx.informers.informer("", "pods")
    before = list(pods.handlers)
    group = await start_group(env.ctx, (), more=(ReplicaSetController,))
    await eventually(lambda: len(pods.handlers) > len(before), what="the handler added")
    await group.stop()
    assert pods.handlers == before
