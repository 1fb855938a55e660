"""localstate (`k3py agent pods`): a meta.db written by the real MetaManager is read read-only,
the newest queued status of a pod is the one shown, podman's inspects decide the status when
given, and a data dir without agent state is one clear error. No processes."""

from __future__ import annotations

import datetime as dt

import pytest

from k3py.agent import localstate
from k3py.agent.metamanager import MetaManager
from k3py.agent.runtime.podman import LABEL_CONTAINER
from k3py.cli import main
from k3py.tunnel.message import EDGE, GROUP_RESOURCE, OP_SYNC, OP_UPDATE, new_message

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def _pod(name: str) -> dict:
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                         "creationTimestamp": "2026-01-01T11:58:00Z"},
            "spec": {"nodeName": "pi", "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Pending"}}


def _status(phase: str, reason: str = "", ready: bool = False) -> dict:
    state = {"waiting": {"reason": reason}} if reason else {"running": {}}
    return {"phase": phase, "podIP": "10.88.0.5" if not reason else None,
            "containerStatuses": [{"name": "c", "ready": ready, "restartCount": 0,
                                   "state": state}]}


async def _agent_state(data_dir) -> None:
    mm = MetaManager(str(data_dir / "agent" / "meta.db"))
    await mm.open()
    await mm.apply(new_message(source="cloudhub", group=GROUP_RESOURCE, operation=OP_SYNC,
                               content={"pods": [_pod("web"), _pod("job")]}))
    for phase, ready in (("Pending", False), ("Running", True)):  # the newer one supersedes
        await mm.queue(new_message(
            source=EDGE, group=GROUP_RESOURCE, operation=OP_UPDATE,
            resource="pods/default/web/status", key="pods/default/web/status",
            content={"uid": "uid-web", "status": _status(phase, ready=ready)}))
    await mm.close()


async def test_queued_status_is_shown_without_podman(tmp_path):
    await _agent_state(tmp_path)
    state = localstate.read_cache(str(tmp_path))
    assert (state.outbox, state.synced) == (1, True)
    rows = localstate.node_pods(state, None, str(tmp_path / "agent" / "pods"), NOW)
    assert [(r["name"], r["status"], r["ready"], r["source"], r["age"]) for r in rows] == [
        ("job", "Pending", "0/1", "cache", "2m"), ("web", "Running", "1/1", "queued", "2m")]
    assert rows[1]["ip"] == "10.88.0.5"
    table = localstate.table(rows).splitlines()
    assert table[0].split() == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"]
    assert table[2].split() == ["default", "web", "1/1", "Running", "0", "2m", "10.88.0.5"]


async def test_podman_decides_the_status(tmp_path):
    await _agent_state(tmp_path)
    state = localstate.read_cache(str(tmp_path))
    exited = {"Id": "c1", "Pod": "p1", "Config": {"Labels": {LABEL_CONTAINER: "c"}},
              "State": {"Status": "exited", "ExitCode": 0,
                        "StartedAt": "2026-01-01T11:58:01Z",
                        "FinishedAt": "2026-01-01T11:59:00Z"}}
    infra = {"Id": "i1", "Pod": "p1", "IsInfra": True, "Config": {"Labels": {}},
             "State": {"Status": "running"}, "NetworkSettings": {"IPAddress": "10.88.0.9"}}
    live = {"uid-web": localstate.PodmanPod("2026-01-01T11:58:00Z", [infra, exited])}
    rows = localstate.node_pods(state, live, str(tmp_path / "agent" / "pods"), NOW)
    web = next(r for r in rows if r["name"] == "web")
    # restartPolicy Always: an exited container is restarted, and is not ready meanwhile
    assert (web["ready"], web["ip"], web["source"]) == ("0/1", "10.88.0.9", "podman")
    job = next(r for r in rows if r["name"] == "job")
    assert job["status"] == "ContainerCreating"  # no podman pod for it: nothing runs


def test_no_agent_state_is_one_error_line(tmp_path, capsys):
    assert main(["agent", "pods", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no agent state in" in err
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "meta.db").write_bytes(b"not a database at all" * 100)
    assert main(["agent", "pods", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "meta.db" in err
