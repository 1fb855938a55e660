"""When the agent posts its Node status: only a status that changed, the conditions' heartbeat
times aside (k3py.agent.node.status_changed), as upstream's kubelet since node leases."""

from __future__ import annotations

import asyncio
import copy

import pytest

from k3py.agent import node as node_module
from k3py.agent.node import STATUS_REPORT_SECONDS, NodeReporter, node_object, status_changed


def _status(beat: str = "2026-12-07T10:00:00Z") -> dict:
    status = node_object(name="pi", node_ip="10.0.0.2", labels={}, taints=[],
                         runtime_version="5.0", data_dir="/")["status"]
    status["conditions"] = [
        {"type": t, "status": s, "reason": r, "message": "m", "lastHeartbeatTime": beat,
         "lastTransitionTime": "2026-12-07T09:00:00Z"}
        for t, s, r in (("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                        ("Ready", "True", "KubeletReady"))]
    return status


def test_nothing_posted_yet_is_a_change():
    assert status_changed(None, _status())


def test_only_heartbeat_times_differ_is_no_change():
    assert not status_changed(_status(), _status(beat="2026-12-07T10:04:50Z"))


def test_a_condition_that_changed_is_a_change():
    new = _status(beat="2026-12-07T10:00:10Z")
    new["conditions"][1].update(status="False", reason="KubeletNotReady")
    assert status_changed(_status(), new)
    moved = _status()
    moved["conditions"][1]["lastTransitionTime"] = "2026-12-07T10:00:10Z"
    assert status_changed(_status(), moved)


def test_a_condition_added_or_gone_is_a_change():
    fewer = _status()
    fewer["conditions"].pop(0)
    assert status_changed(_status(), fewer)
    assert status_changed(fewer, _status())


def test_any_other_field_that_changed_is_a_change():
    for change in (lambda s: s["capacity"].update(pods="120"),
                   lambda s: s["addresses"].append({"type": "InternalIP", "address": "fd00::2"}),
                   lambda s: s.pop("daemonEndpoints")):
        new = copy.deepcopy(_status())
        change(new)
        assert status_changed(_status(), new)


def test_the_posted_status_is_not_altered():
    posted = _status()
    status_changed(posted, _status(beat="2026-12-07T10:00:10Z"))
    assert posted == _status()


def _reporter(monkeypatch, now: list[float], rand: float, asks: bool = True) -> NodeReporter:
    monkeypatch.setattr(node_module, "_clock", lambda: now[0])
    node = node_object(name="pi", node_ip="10.0.0.2", labels={}, taints=[],
                       runtime_version="5.0", data_dir="/")
    sent: list = []

    async def send(msg) -> None:
        sent.append(msg)
    return NodeReporter(node, send, server_asks=lambda: asks, rand=lambda: rand)


@pytest.mark.parametrize("rand, due_after", [(0.0, 150.0), (0.5, 300.0), (0.999, 449.7)])
def test_after_a_registration_the_next_report_is_spread(monkeypatch, rand, due_after):
    """A fleet registering at once (a server restart) does not report in step for good: the
    first unchanged report after a registration comes at 50-150 % of the 5 minutes."""
    now = [1000.0]
    reporter = _reporter(monkeypatch, now, rand)
    asyncio.run(reporter.register())
    now[0] += due_after - 1
    assert reporter.report_due(reporter._ready_status(), stalled=False) == (False, True)
    now[0] += 1
    assert reporter.report_due(reporter._ready_status(), stalled=False) == (True, True)


def test_a_periodic_report_is_followed_by_one_after_the_full_period(monkeypatch):
    now = [1000.0]
    reporter = _reporter(monkeypatch, now, rand=0.0)
    asyncio.run(reporter.register())
    now[0] += STATUS_REPORT_SECONDS / 2
    asyncio.run(reporter._post(reporter._ready_status(), periodic=True))
    now[0] += STATUS_REPORT_SECONDS - 1
    assert reporter.report_due(reporter._ready_status(), stalled=False)[0] is False
    now[0] += 1
    assert reporter.report_due(reporter._ready_status(), stalled=False)[0] is True


def test_a_stall_or_a_server_that_does_not_ask_posts_at_once(monkeypatch):
    now = [1000.0]
    reporter = _reporter(monkeypatch, now, rand=0.5)
    asyncio.run(reporter.register())
    assert reporter.report_due(reporter._ready_status(), stalled=True) == (True, False)
    older = _reporter(monkeypatch, now, rand=0.5, asks=False)
    asyncio.run(older.register())
    assert older.report_due(older._ready_status(), stalled=False) == (True, True)
