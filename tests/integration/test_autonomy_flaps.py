"""Link flapping (issue 10), short version: a `k3py agent` in a network namespace sees FLAPS cuts
of 1-5 s in a row while pods are created and deleted on its node through kubectl. After each
cut the tunnel carries a pod's status again; afterwards the server's pods of the node, podman's
and the node's own view (`k3py agent pods -o json`) agree with nothing queued, the pod that ran
throughout was neither restarted nor recreated, and neither process holds more asyncio tasks,
fds or TCP sockets than after the warm-up round, nor more than 5 MB more RSS.
bench/autonomy_flaps.py is the 100-cut run with the figures.

Also `k3py agent pods` itself: with the link cut it prints the node's pods from meta.db and
podman (kubectl's columns, `-o json`), and one error line for a data dir without agent state.
Needs root (`ip netns`); skipped with the reason otherwise. Env: K3PY_TEST_FLAPS (default 5)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.harness import clean_env, wait_for
from tests.integration.agents import kubectl_popen, read_until, stop_proc
from tests.integration.flaps import ROOT, FlapRig
from tests.integration.netns import netns_factory  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLAPS = int(os.environ.get("K3PY_TEST_FLAPS", "5"))
WARMUP = 3
RSS_SLACK_MB = 5.0
FD_SLACK = 2  # an fd or socket in passing (a podman call, a kubectl request being served)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    from tests.integration.netns import NetNS, require_netns
    require_netns()
    tmp = tmp_path_factory.mktemp("flaps")
    with NetNS() as ns:
        r = FlapRig(tmp, ns)
        try:
            r.start()
            yield r
        finally:
            r.close()


def k3py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "k3py", *args], capture_output=True, text=True,
                          timeout=60, cwd=str(ROOT), env={**clean_env(), "PYTHONPATH": str(ROOT)})


def test_local_pods_with_the_link_cut(rig: FlapRig):
    rig.create_pod("local-probe", probe=True)
    wait_for(lambda: rig.srv.kubectl_json("get", "pod", "steady")["status"].get("phase")
             == "Running" and rig.probe_answered("local-probe"), 90, 0.3,
             "steady Running and local-probe ErrImageNeverPull")
    rig.ns.cut()
    try:
        table = k3py("agent", "pods", "--data-dir", str(rig.agent_dir))
        local = rig.local_view()
    finally:
        rig.ns.restore()
        rig.delete_pods("local-probe")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"]
    rows = {line.split()[1]: line.split() for line in lines[1:] if line.strip()
            and line.split()[0] == "default"}
    assert rows["steady"][2:5] == ["1/1", "Running", "0"], table.stdout
    assert rows["local-probe"][2:4] == ["0/1", "ErrImageNeverPull"], table.stdout
    assert f"node {rig.node}: " in table.stdout and "queued for the server" in table.stdout
    steady = next(p for p in local["pods"] if p["name"] == "steady")
    server = rig.srv.kubectl_json("get", "pod", "steady")
    assert (steady["uid"], steady["ip"]) == (server["metadata"]["uid"], server["status"]["podIP"])
    assert local["node"] == rig.node and isinstance(local["outbox"], int)

    missing = k3py("agent", "pods", "--data-dir", str(rig.tmp / "nothing-here"))
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.count("\n") == 1 and "no agent state in" in missing.stderr


def test_a_stream_open_when_the_tunnel_drops_ends_on_both_ends(rig: FlapRig):
    """A cut long enough for the websocket pings to drop the tunnel: `kubectl exec -i` that
    was open ends with an error, and the agent's task serving it ends too (the stream is
    gone with the link: nothing would ever read or write it again)."""
    wait_for(lambda: rig.srv.kubectl_json("get", "pod", "steady")["status"].get("phase")
             == "Running", 90, 0.3, "steady Running")
    proc = kubectl_popen(rig.srv, "exec", "-i", "steady", "--", "cat", stdin=subprocess.PIPE)
    try:
        proc.stdin.write("before-the-cut\n")
        proc.stdin.flush()
        read_until(proc, "before-the-cut")
        assert rig.agent_streams() == 1
        lost_at = len(rig.agent_log.read_text(errors="replace"))
        rig.ns.cut()
        try:
            wait_for(lambda: "lost; reconnecting" in
                     rig.agent_log.read_text(errors="replace")[lost_at:], 60, 0.5,
                     "the agent to drop the tunnel")
            proc.wait(60)  # the server ended the stream: kubectl exits
        finally:
            rig.ns.restore()
        assert proc.returncode != 0
        try:
            wait_for(lambda: rig.agent_streams() == 0, 30, 0.5,
                     "the agent's stream task to end")
        except TimeoutError as e:
            raise AssertionError(f"{e}: the exec stream outlived the tunnel on the agent "
                                 f"(tasks {rig.agent_tasks()})") from None
    finally:
        stop_proc(proc)


def test_flapping_link_with_pod_churn(rig: FlapRig):
    for _ in range(WARMUP):
        rig.flap()
    rig.clear_churn()
    rig.converge()
    steady = rig.steady_container()
    before = rig.usage()
    for _ in range(FLAPS):
        rig.flap()
    rig.clear_churn()
    rig.converge()
    after = rig.usage()
    report = "; ".join(
        f"{who}: rss {before[who].rss_mb:.1f}->{after[who].rss_mb:.1f} MB (SQLite "
        f"{before[who].sqlite_mb:.1f}->{after[who].sqlite_mb:.1f} MB), fds "
        f"{before[who].fds}->{after[who].fds}, tcp {before[who].tcp}->{after[who].tcp}, tasks "
        f"{before[who].task_count}->{after[who].task_count}" for who in before)
    print(f"\n{FLAPS} flaps: {report}; probe round trip after the link returned max "
          f"{max(rig.recoveries):.2f}s; {len(rig.reconnects)} redials")
    assert rig.steady_container() == steady, "the pod that ran throughout was recreated"
    assert steady[1] == 0
    for who in before:
        b, a = before[who], after[who]
        grown = a.grown(b)
        assert not grown, f"{who}: more asyncio tasks after the flaps: {grown}; {report}"
        assert a.fds <= b.fds + FD_SLACK, f"{who}: fds grew; {report}"
        assert a.tcp <= b.tcp + FD_SLACK, f"{who}: TCP sockets grew; {report}"
        assert a.rss_mb <= b.rss_mb + RSS_SLACK_MB, f"{who}: RSS grew; {report}"
