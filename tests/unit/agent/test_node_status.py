"""When the agent posts its Node status: only a status that changed, the conditions' heartbeat
times aside (k3py.agent.node.status_changed), as upstream's kubelet since node leases."""

from __future__ import annotations

import copy

from k3py.agent.node import node_object, status_changed


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
