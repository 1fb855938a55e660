"""`kubectl logs` of a restarted container shows its current run only, `--previous` the run
before (the agent restarts a crashed container with `podman start` of the same container, so
podman's log holds every run); `--previous` of a never-restarted container is the upstream 400,
and so are the logs of a container that never started (waiting, with its reason).

One `k3py server` with its embedded agent (real podman, the offline busybox test image),
driven with the real kubectl."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timedelta

import pytest

from tests.harness import wait_for
from tests.integration.agents import (
    IMAGE,
    container_status,
    embedded_node,
    kubectl_popen,
    read_until,
    stop_proc,
)

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman")]

# run 1 prints a line and crashes; run 2 prints its line, then ticks forever
SCRIPT = ("n=$(cat /d/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /d/n; echo \"run $n\"; "
          "echo \"err $n\" >&2; if [ $n -ge 2 ]; then i=0; while true; do i=$((i+1)); "
          "echo \"tick $i\"; sleep 0.3; done; fi; exit 1")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with embedded_node(tmp_path_factory.mktemp("logs"), "lg", timeout=30) as s:
        yield s


def _apply(srv, name: str, script: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"nodeName": srv.node, "terminationGracePeriodSeconds": 1,
                    "restartPolicy": "Always",
                    "volumes": [{"name": "d", "emptyDir": {}}],
                    "containers": [{"name": "c", "image": IMAGE,
                                    "imagePullPolicy": "IfNotPresent",
                                    "command": ["sh", "-c", script],
                                    "volumeMounts": [{"name": "d", "mountPath": "/d"}]}]}}
    srv.kubectl("apply", "-f", "-", input=json.dumps(pod))


def _running_after_restart(srv, name: str) -> bool:
    cs = container_status(srv, name)
    return cs.get("restartCount", 0) == 1 and "running" in (cs.get("state") or {})


def test_current_and_previous_instance(srv):
    _apply(srv, "relog", SCRIPT)
    wait_for(lambda: _running_after_restart(srv, "relog"), 60, 0.3, "restarted once, running")
    wait_for(lambda: "tick 2" in srv.kubectl("logs", "relog").stdout, 30, 0.3, "ticks")
    cur = srv.kubectl("logs", "relog").stdout
    # stdout and stderr lines of one run come in the order conmon read them: compare sets
    assert cur.startswith("run 2\n") and {"err 2", "tick 1"} <= set(cur.splitlines()), cur
    assert "run 1" not in cur and "err 1" not in cur
    prev = srv.kubectl("logs", "relog", "--previous").stdout
    assert sorted(prev.splitlines()) == ["err 1", "run 1"] and prev.endswith("\n")
    # the flags keep working on either instance
    assert srv.kubectl("logs", "relog", "-p", "--tail=1").stdout == prev.splitlines(True)[-1]
    assert srv.kubectl("logs", "relog", "-p", "--limit-bytes=3").stdout == prev[:3]
    stamped = srv.kubectl("logs", "relog", "-p", "--timestamps").stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == prev.splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$", line.split(" ")[0])
               for line in stamped)
    assert srv.kubectl("logs", "relog", "-p", "--since=1h").stdout == prev
    # a sinceTime after run 1's lines: nothing of the previous run
    last = datetime.fromisoformat(stamped[-1].split(" ")[0][:19] + "+00:00")
    after = (last + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert srv.kubectl("logs", "relog", "-p", f"--since-time={after}").stdout == ""
    tail = srv.kubectl("logs", "relog", "--tail=2").stdout.splitlines()
    assert len(tail) == 2 and all(line.startswith("tick ") for line in tail)
    assert srv.kubectl("logs", "relog", "--since=1h").stdout.startswith("run 2\n")
    # -f on the running instance follows: new ticks arrive, nothing of run 1
    proc = kubectl_popen(srv, "logs", "-f", "relog")
    try:
        n = int(re.findall(r"tick (\d+)", srv.kubectl("logs", "relog").stdout)[-1])
        seen = read_until(proc, f"tick {n + 3}\n")
    finally:
        stop_proc(proc)
    assert seen.startswith("run 2\n") and "run 1" not in seen
    srv.kubectl("delete", "pod", "relog", "--wait=false")


def test_previous_of_never_restarted_container(srv):
    _apply(srv, "steady", "echo hello; sleep 3600")
    wait_for(lambda: "running" in (container_status(srv, "steady").get("state") or {}),
             60, 0.3, "running")
    wait_for(lambda: srv.kubectl("logs", "steady").stdout == "hello\n", 20, 0.3, "hello")
    out = srv.kubectl("logs", "steady", "--previous", check=False)
    assert out.returncode != 0
    assert out.stderr.strip() == ('Error from server (BadRequest): previous terminated '
                                  'container "c" in pod "steady" not found')
    srv.kubectl("delete", "pod", "steady", "--wait=false")


def test_logs_of_a_container_waiting_to_start(srv):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "never"},
           "spec": {"nodeName": srv.node, "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": "k3py.local/absent:1",
                                    "imagePullPolicy": "Never"}]}}
    srv.kubectl("apply", "-f", "-", input=json.dumps(pod))
    wait_for(lambda: (container_status(srv, "never").get("state") or {}).get("waiting", {})
             .get("reason") == "ErrImageNeverPull", 60, 0.3, "waiting: ErrImageNeverPull")
    out = srv.kubectl("logs", "never", check=False)
    assert out.returncode != 0
    assert out.stderr.strip() == ('Error from server (BadRequest): container "c" in pod "never" '
                                  'is waiting to start: ErrImageNeverPull')
    srv.kubectl("delete", "pod", "never", "--wait=false")

