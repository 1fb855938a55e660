"""The restart policy of k3py/agent/pods/restarts.py as pure functions over podman inspects:
restart decisions, the crash-loop backoff, pull backoff, init containers in order, and the
state.json an upgraded agent reads back."""

from __future__ import annotations

import json

import pytest

from k3py.agent.pods.restarts import (
    PullFailure,
    Restart,
    RestartState,
    Run,
    load_restarts,
    next_backoff,
    note_exit,
    note_pull_failure,
    plan,
    save_restarts,
    should_restart,
)
from k3py.agent.runtime.podman import LABEL_CONTAINER

pytestmark = pytest.mark.unit


def _inspect(name: str, status: str = "running", code: int = 0, started: str = "",
             finished: str = "") -> dict:
    return {"Id": f"id-{name}", "Config": {"Labels": {LABEL_CONTAINER: name}},
            "State": {"Status": status, "ExitCode": code, "StartedAt": started,
                      "FinishedAt": finished}}


def _pod(policy: str = "Always", init: tuple[str, ...] = (), apps: tuple[str, ...] = ("app",)
         ) -> dict:
    spec: dict = {"restartPolicy": policy,
                  "containers": [{"name": n, "image": f"img-{n}"} for n in apps]}
    if init:
        spec["initContainers"] = [{"name": n, "image": f"img-{n}"} for n in init]
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}, "spec": spec}


T0 = "2024-01-01T10:00:00.000000000Z"
T1 = "2024-01-01T10:00:01.000000000Z"
T1_UNIX = 1704103201.0


def test_should_restart():
    assert should_restart("Always", 0, False) and should_restart("Always", 1, False)
    assert should_restart("OnFailure", 1, False) and not should_restart("OnFailure", 0, False)
    assert not should_restart("Never", 1, False)
    assert should_restart("Always", 1, True) and not should_restart("Always", 0, True)
    assert not should_restart("Never", 1, True)


def test_backoff_sequence_and_reset():
    entry = RestartState()
    delays = []
    t = 1000.0
    for i in range(8):
        note_exit(entry, f"exit{i}", t, t + 1, t + 1)
        delays.append(entry.delay)
        assert entry.due == t + 1 + entry.delay
        note_exit(entry, f"exit{i}", t, t + 1, t + 5)  # the same exit again: no change
        assert entry.due == t + 1 + delays[-1]
        entry.backoff = next_backoff(entry.delay)  # what a restart records
        t += 1000
    assert delays == [0, 10, 20, 40, 80, 160, 300, 300]
    note_exit(entry, "long", t, t + 601, t + 601)  # ran 10 min: starts over
    assert entry.delay == 0


def test_pull_backoff_doubles_to_five_minutes():
    entry = PullFailure("ErrImagePull", "")
    delays = []
    for _ in range(7):
        note_pull_failure(entry, "ErrImagePull", "no such host", 100.0)
        delays.append(entry.due - entry.at)
    assert delays == [10, 20, 40, 80, 160, 300, 300]


def test_new_pod_runs_its_app_containers():
    p = plan(_pod(apps=("a", "b")), [], {}, {}, now=0.0)
    assert p.actions == [Run("a", "containers"), Run("b", "containers")]
    assert p.initialized and not p.failed and p.waiting == {}


def test_init_containers_run_one_at_a_time():
    pod = _pod(init=("i1", "i2"))
    p = plan(pod, [], {}, {}, now=0.0)
    assert p.actions == [Run("i1", "initContainers")] and not p.initialized
    p = plan(pod, [_inspect("i1", "running")], {}, {}, now=0.0)
    assert p.actions == [] and not p.initialized
    p = plan(pod, [_inspect("i1", "exited", 0)], {}, {}, now=0.0)
    assert p.actions == [Run("i2", "initContainers")]
    done = [_inspect("i1", "exited", 0), _inspect("i2", "exited", 0)]
    p = plan(pod, done, {}, {}, now=0.0)
    assert p.initialized and p.actions == [Run("app", "containers")]


def test_failed_init_container_fails_the_pod_under_never():
    p = plan(_pod("Never", init=("i1",)), [_inspect("i1", "exited", 2)], {}, {}, now=0.0)
    assert p.failed and not p.initialized and p.actions == []


def test_crash_loop_waits_then_restarts():
    restarts = {"app": RestartState(restarts=3, backoff=20.0)}
    crashed = _inspect("app", "exited", 1, T0, T1)
    p = plan(_pod(), [crashed], restarts, {}, now=T1_UNIX + 5)
    assert p.actions == [] and p.new_exits and p.backoffs == [("app", False)]
    assert p.waiting["app"] == {
        "reason": "CrashLoopBackOff",
        "message": "back-off 20s restarting failed container=app pod=p_ns(u1)"}
    assert p.wake_at == [T1_UNIX + 20]
    # the same exit, later: nothing new to save, and the restart is due
    p = plan(_pod(), [crashed], restarts, {}, now=T1_UNIX + 20)
    assert not p.new_exits and p.backoffs == []
    assert p.actions == [Restart("app", False, crashed)]


def test_first_crash_restarts_at_once_and_completed_stays_under_onfailure():
    crashed = _inspect("app", "exited", 1, T0, T1)
    restarts: dict = {}
    p = plan(_pod(), [crashed], restarts, {}, now=T1_UNIX)
    assert p.actions == [Restart("app", False, crashed)] and p.backoffs == []
    assert restarts["app"].exit and restarts["app"].delay == 0
    done = _inspect("app", "exited", 0, T0, T1)
    assert plan(_pod("OnFailure"), [done], {}, {}, now=T1_UNIX).actions == []


def test_image_pull_backoff_shows_err_then_back_off():
    entry = PullFailure("ErrImagePull", "pull failed")
    note_pull_failure(entry, "ErrImagePull", "pull failed", 100.0)  # due at 110
    p = plan(_pod(), [], {}, {"app": entry}, now=101.0)
    assert p.waiting["app"] == {"reason": "ErrImagePull", "message": "pull failed"}
    assert p.wake_at == [105.0, 110.0] and p.actions == []
    p = plan(_pod(), [], {}, {"app": entry}, now=106.0)
    assert p.waiting["app"] == {"reason": "ImagePullBackOff",
                                "message": 'Back-off pulling image "img-app"'}
    assert plan(_pod(), [], {}, {"app": entry}, now=110.0).actions == [Run("app", "containers")]


def test_state_json_round_trip_and_older_files(tmp_path):
    pods_dir = str(tmp_path)
    assert load_restarts(pods_dir, "u1") == {}
    state = {"app": RestartState(restarts=2, backoff=20.0, exit="a/b", delay=10.0, due=5.0,
                                 last={"exitCode": 1}, logs={"prev": None, "cur": "t"})}
    save_restarts(pods_dir, "u1", state)
    assert load_restarts(pods_dir, "u1") == state
    # what an agent before the PodRecord wrote: plain dicts, some keys missing
    (tmp_path / "u2").mkdir()
    (tmp_path / "u2" / "state.json").write_text(json.dumps(
        {"containers": {"app": {"restarts": 4, "backoff": 40.0}}}))
    assert load_restarts(pods_dir, "u2") == {"app": RestartState(restarts=4, backoff=40.0)}
    (tmp_path / "u3").mkdir()
    (tmp_path / "u3" / "state.json").write_text("not json")
    assert load_restarts(pods_dir, "u3") == {}
