"""The lastTransitionTime the server stores for a node's posted conditions (edge/nodestatus.py
merged_status): the stored one while a condition's status stays, the server's now when the
status changed and the node's own time is not later than the stored one, as upstream's kubelet
sets it from the Node it reads."""

from __future__ import annotations

import copy

import pytest

from k3py.server.edge.nodestatus import merged_status

pytestmark = pytest.mark.unit

NOW = "2026-12-07T22:00:00Z"
AGENT_START = "2026-12-07T08:00:00Z"


def _cond(kind: str, status: str, transition: str | None) -> dict:
    c = {"type": kind, "status": status, "lastHeartbeatTime": "2026-12-07T21:59:59Z"}
    if transition is not None:
        c["lastTransitionTime"] = transition
    return c


def _times(status: dict) -> dict:
    return {c["type"]: c.get("lastTransitionTime") for c in status["conditions"]}


def test_back_from_unknown_the_transition_is_now():
    stored = {"conditions": [_cond("Ready", "Unknown", "2026-12-07T21:50:00Z"),
                             _cond("MemoryPressure", "Unknown", "2026-12-07T21:50:00Z")]}
    posted = {"conditions": [_cond("Ready", "True", AGENT_START),
                             _cond("MemoryPressure", "False", AGENT_START)],
              "nodeInfo": {"kubeletVersion": "v1"}}
    out = merged_status(posted, stored, NOW)
    assert _times(out) == {"Ready": NOW, "MemoryPressure": NOW}
    assert out["nodeInfo"] == {"kubeletVersion": "v1"}
    assert _times(posted) == {"Ready": AGENT_START, "MemoryPressure": AGENT_START}  # unchanged


def test_a_status_that_stays_keeps_the_stored_transition():
    """The agent posts its own start again 5 minutes later: the time set on its return stays."""
    stored = {"conditions": [_cond("Ready", "True", "2026-12-07T21:55:00Z")]}
    out = merged_status({"conditions": [_cond("Ready", "True", AGENT_START)]}, stored, NOW)
    assert _times(out) == {"Ready": "2026-12-07T21:55:00Z"}


def test_a_later_posted_transition_is_the_nodes_own():
    stored = {"conditions": [_cond("Ready", "Unknown", "2026-12-07T21:50:00Z")]}
    later = "2026-12-07T21:58:00.5Z"
    out = merged_status({"conditions": [_cond("Ready", "True", later)]}, stored, NOW)
    assert _times(out) == {"Ready": later}


@pytest.mark.parametrize("posted_time", [None, "not a time", 12, "2026-12-07T21:50:00Z",
                                         "2026-12-07T21:50:00"])
def test_a_missing_bad_or_equal_transition_becomes_now(posted_time):
    stored = {"conditions": [_cond("Ready", "Unknown", "2026-12-07T21:50:00Z")]}
    c = {"type": "Ready", "status": "True", "lastTransitionTime": posted_time}
    assert _times(merged_status({"conditions": [c]}, stored, NOW)) == {"Ready": NOW}


def test_no_stored_condition_of_the_type_leaves_the_posted_one():
    posted = {"conditions": [_cond("Ready", "True", AGENT_START)]}
    assert _times(merged_status(posted, None, NOW)) == {"Ready": AGENT_START}
    stored = {"conditions": [_cond("DiskPressure", "Unknown", "2026-12-07T21:50:00Z")]}
    assert _times(merged_status(posted, stored, NOW)) == {
        "DiskPressure": "2026-12-07T21:50:00Z", "Ready": AGENT_START}
    # a stored condition without a time: the posted one stands either way
    stored = {"conditions": [{"type": "Ready", "status": "Unknown"}]}
    assert _times(merged_status(posted, stored, NOW)) == {"Ready": AGENT_START}


def test_of_several_stored_of_a_type_the_last_ones_time_counts():
    stored = {"conditions": [_cond("Ready", "Unknown", "2026-12-07T21:50:00Z"),
                             _cond("Ready", "True", "2026-12-07T21:55:00Z")]}
    out = merged_status({"conditions": [_cond("Ready", "True", AGENT_START)]}, stored, NOW)
    assert out["conditions"] == [_cond("Ready", "True", "2026-12-07T21:55:00Z")]


STORED_READY = _cond("Ready", "Unknown", "2026-12-07T21:50:00Z")
UNTYPED = ["x", {"type": ["a"]}, {"status": "True"}]


@pytest.mark.parametrize(("posted", "conditions"), [
    ({}, [STORED_READY]),
    ({"conditions": "x"}, "x"),
    ("x", None),
    ({"conditions": UNTYPED}, [STORED_READY, *UNTYPED])])
def test_malformed_posts_are_left_to_validation(posted, conditions):
    """Conditions that are not a list, or without a type, are stored as posted, untimed,
    after the stored ones (validation refuses them): nothing of them is matched."""
    before = copy.deepcopy(posted)
    out = merged_status(posted, {"conditions": [STORED_READY]}, NOW)
    assert out == (posted if conditions is None else {**posted, "conditions": conditions})
    assert posted == before
