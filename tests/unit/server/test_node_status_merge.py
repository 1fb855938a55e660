"""The agent's share of its Node status (edge/nodestatus.py): a post replaces the fields and the
conditions (by type, in place) it carries and keeps the rest, as upstream's kubelet's strategic
merge patch does; and what was stored of it tells an edit by someone else from a cache that is
only behind."""

from __future__ import annotations

import pytest

from k3py.server.edge.nodestatus import AgentStatus, merged_conditions, merged_status

pytestmark = pytest.mark.unit

NOW = "2026-12-07T22:00:00Z"


def _cond(kind: str, status: str = "False", **more: str) -> dict:
    return {"type": kind, "status": status, "lastHeartbeatTime": "2026-12-07T21:59:59Z",
            "lastTransitionTime": "2026-12-07T08:00:00Z", **more}


def _types(conditions: list) -> list:
    return [(c["type"], c["status"]) for c in conditions]


def _with(status: dict, condition: dict) -> dict:
    """`status` as another writer leaves it: `condition` in place of the one of its type."""
    return {**status, "conditions": [condition if c["type"] == condition["type"] else c
                                     for c in status["conditions"]]}


def _node(version: int, status: dict) -> dict:
    return {"metadata": {"name": "pi", "resourceVersion": str(version)}, "status": status}


POSTED = {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}],
          "capacity": {"cpu": "4"},
          "conditions": [_cond("MemoryPressure"), _cond("Ready", "True")]}


def test_foreign_conditions_stay_in_their_place():
    stored = [_cond("NetworkUnavailable"), _cond("Ready", "Unknown"),
              _cond("KernelDeadlock"), _cond("MemoryPressure", "Unknown")]
    out = merged_conditions(POSTED["conditions"], stored, NOW)
    assert _types(out) == [("NetworkUnavailable", "False"), ("Ready", "True"),
                           ("KernelDeadlock", "False"), ("MemoryPressure", "False")]
    # in the same walk: a changed status's transition is now, the others' stay
    assert [c["lastTransitionTime"] for c in out] == [
        "2026-12-07T08:00:00Z", NOW, "2026-12-07T08:00:00Z", NOW]


def test_new_types_come_last_in_posted_order():
    out = merged_conditions(POSTED["conditions"], [_cond("ExampleProblem", "True")], NOW)
    assert _types(out) == [("ExampleProblem", "True"), ("MemoryPressure", "False"),
                           ("Ready", "True")]
    assert merged_conditions(POSTED["conditions"], None, NOW) == POSTED["conditions"]


def test_posted_fields_replace_theirs_and_the_rest_stays():
    stored = {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                            {"type": "ExternalIP", "address": "1.2.3.4"}],
              "capacity": {"cpu": "2", "example.com/dongle": "1"},
              "volumesInUse": ["kubernetes.io/csi/x"],
              "conditions": [_cond("NetworkUnavailable")]}
    out = merged_status(POSTED, stored, NOW)
    assert out["addresses"] == POSTED["addresses"]  # a field is the agent's whole
    assert out["capacity"] == {"cpu": "4"}
    assert out["volumesInUse"] == ["kubernetes.io/csi/x"]
    assert _types(out["conditions"]) == [("NetworkUnavailable", "False"),
                                         ("MemoryPressure", "False"), ("Ready", "True")]
    assert stored["capacity"] == {"cpu": "2", "example.com/dongle": "1"}  # left as it was


def test_a_malformed_post_is_stored_as_posted_for_validation():
    assert merged_status({"conditions": "x"}, {"conditions": []}, NOW)["conditions"] == "x"
    assert merged_status("x", {"conditions": []}, NOW) == "x"  # type: ignore[arg-type]


def test_an_edit_of_the_agents_part_is_seen():
    written = _node(7, merged_status(POSTED, {"conditions": [_cond("NetworkUnavailable")]},
                                     NOW))
    mine = AgentStatus.of(POSTED, written)
    assert not mine.overridden_in(written)
    edited = _node(9, _with(written["status"], _cond("Ready", "True", message="hi")))
    assert mine.overridden_in(edited)
    unknown = _node(10, _with(written["status"], _cond("Ready", "Unknown")))
    assert mine.overridden_in(unknown)
    moved = _node(11, {**written["status"], "capacity": {"cpu": "1"}})
    assert mine.overridden_in(moved)
    dropped = _node(12, {**written["status"], "conditions": [_cond("NetworkUnavailable")]})
    assert mine.overridden_in(dropped)


def test_others_parts_times_and_a_cache_behind_are_not_an_edit():
    written = _node(7, merged_status(POSTED, {"conditions": [_cond("NetworkUnavailable")]},
                                     NOW))
    mine = AgentStatus.of(POSTED, written)
    foreign = _node(8, {**_with(written["status"], _cond("NetworkUnavailable", "True")),
                        "volumesInUse": ["v"]})
    assert not mine.overridden_in(foreign)
    beat = _node(9, _with(written["status"], _cond(
        "Ready", "True", lastHeartbeatTime="2026-12-07T22:10:00Z",
        lastTransitionTime="2026-12-07T22:10:00Z")))
    assert not mine.overridden_in(beat)
    behind = _node(6, {"conditions": [_cond("Ready", "Unknown")]})
    assert not mine.overridden_in(behind)


def test_a_version_judged_is_not_compared_again():
    """Asked at every Lease: the cached Node's version judged last gives the same verdict
    without a look at its status (the same version is the same Node); a new one is compared."""
    written = _node(7, merged_status(POSTED, {}, NOW))
    mine = AgentStatus.of(POSTED, written)
    assert not mine.overridden_in(written)
    # never in a cache: version 7 with another status, which is not looked at
    assert not mine.overridden_in(_node(7, _with(written["status"], _cond("Ready", "Unknown"))))
    unknown = _node(8, _with(written["status"], _cond("Ready", "Unknown")))
    assert mine.overridden_in(unknown)
    assert mine.overridden_in(_node(8, written["status"]))  # as judged: not looked at
    assert mine.judged == (8, True)
    assert not mine.overridden_in(_node(6, {}))  # a cache behind: nothing, nothing judged
    assert mine.judged == (8, True)
    assert not mine.overridden_in(_node(9, written["status"]))  # put back: a new version
    assert mine == AgentStatus.of(POSTED, written)  # what was judged is no part of it
