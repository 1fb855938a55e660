"""Two `k3py server` processes on one PostgreSQL (--datastore-endpoint): each sees the other's
writes and watch events, a conditional update race between them has one winner and one 409, a
datastore outage answers 503/504 without stopping the servers, and a bad endpoint is one line.

Uses a throwaway cluster from tests/pg.py; each server has its own data dir, port and serving
certificate, from the CAs the first one wrote to the datastore."""

from __future__ import annotations

import json
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.harness import KUBECTL, ServerProcess, free_port, wait_for
from tests.integration.agents import stop_proc
from tests.integration.test_server_cli import k3py, one_line_error
from tests.pg import SKIP_REASON, PostgresCluster, pg_bindir

pytestmark = pytest.mark.skipif(pg_bindir() is None, reason=SKIP_REASON)


@pytest.fixture(scope="module")
def pg():
    cluster = PostgresCluster(fsync=False)
    try:
        yield cluster.start()
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def servers(pg, tmp_path_factory):
    """Servers A and B on one database; B joins A's cluster with --server and A's token (the
    CAs and keys come from the datastore's bootstrap data)."""
    dsn = pg.create_db("shared")
    a = ServerProcess(tmp_path_factory.mktemp("a"), extra_args=["--datastore-endpoint", dsn])
    pair = [a]
    try:
        a.start(timeout=60)
        pair.append(ServerProcess(tmp_path_factory.mktemp("b"), extra_args=[
            "--datastore-endpoint", dsn, "--server", a.url, "--token", a.join_token()]))
        pair[1].start(timeout=60)
        yield pair
    finally:
        for srv in pair:
            srv.stop()


class _Watch:
    """`kubectl get configmaps -w -o name` on `srv` in default; its lines are collected by one
    reader thread. Ready once it has listed ConfigMap `name` (created first): every later
    write is then in its watch."""

    def __init__(self, srv: ServerProcess, name: str) -> None:
        srv.kubectl("create", "configmap", name)
        self.lines: list[str] = []
        self.proc = subprocess.Popen([KUBECTL, "--kubeconfig", str(srv.kubeconfig), "get",
                                      "configmaps", "-n", "default", "-w", "-o", "name"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            self.wait(f"configmap/{name}", 15)
        except BaseException:
            self.stop()
            raise

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def wait(self, line: str, timeout: float) -> None:
        wait_for(lambda: line in self.lines, timeout, what=f"{line!r} in the watch "
                 f"(so far {self.lines[-5:]})")

    def stop(self) -> None:
        stop_proc(self.proc)


def _call(srv: ServerProcess, name: str, body: dict | None = None) -> dict:
    """GET (or PUT `body`) a ConfigMap in default with the kubernetes client; the object, or
    the Status the server answered."""
    api_client = srv.client()
    try:
        api = client.CoreV1Api(api_client)
        if body is None:
            got = api.read_namespaced_config_map(name, "default", _request_timeout=30)
        else:
            got = api.replace_namespaced_config_map(name, "default", body, _request_timeout=30)
        return {"kind": "ConfigMap", **api_client.sanitize_for_serialization(got)}
    except ApiException as e:
        return json.loads(e.body)
    finally:
        api_client.close()


def test_write_on_one_server_is_read_and_watched_on_the_other(servers):
    a, b = servers
    watch = _Watch(b, "listed-on-b")
    try:
        a.kubectl("create", "configmap", "from-a", "--from-literal=k=v")
        watch.wait("configmap/from-a", 15)
    finally:
        watch.stop()
    got = b.kubectl_json("get", "configmap", "from-a")
    assert got["data"] == {"k": "v"}
    assert a.kubectl_json("get", "configmap", "from-a")["metadata"]["resourceVersion"] == \
        got["metadata"]["resourceVersion"]


def test_conditional_update_race_has_one_winner_and_one_conflict(servers):
    a, b = servers
    a.kubectl("create", "configmap", "race")
    for round_ in range(5):
        current = b.kubectl_json("get", "configmap", "race")
        bodies = []
        for who in ("a", "b"):
            body = json.loads(json.dumps(current))
            body["data"] = {"winner": who, "round": str(round_)}
            bodies.append(body)
        both = threading.Barrier(2)

        def put(srv: ServerProcess, body: dict, both: threading.Barrier = both) -> dict:
            both.wait(10)  # the two PUTs leave together
            return _call(srv, "race", body)

        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(put, (a, b), bodies))
        won = [r for r in results if r.get("kind") == "ConfigMap"]
        lost = [r for r in results if r.get("kind") == "Status"]
        assert len(won) == 1 and len(lost) == 1, results
        assert lost[0]["code"] == 409 and lost[0]["reason"] == "Conflict", lost[0]
        assert _call(a, "race")["data"] == won[0]["data"]


def test_datastore_outage_answers_503_and_recovers(pg, servers):
    a, b = servers
    watch = _Watch(a, "before-outage")
    try:
        pg.stop()
        try:
            for srv in (a, b):
                status = _call(srv, "before-outage")
                assert status.get("kind") == "Status" and status["code"] in (503, 504), status
                assert "datastore" in status["message"], status
        finally:
            pg.start()
        assert a.proc.poll() is None and b.proc.poll() is None, "a server exited"
        wait_for(lambda: b.kubectl("create", "configmap", "after-outage",
                                   check=False).returncode == 0, 30,
                 what="a write through B after the datastore came back")
        # the watch opened on A before the outage resumes and sees B's write
        watch.wait("configmap/after-outage", 20)
    finally:
        watch.stop()


@pytest.mark.parametrize("problem", ["wrong password", "missing database", "unreachable"])
def test_unusable_datastore_is_one_line_at_start(pg, tmp_path, problem):
    dsn = {"wrong password": pg.dsn("postgres", password="hunter2"),
           "missing database": pg.dsn("no_such_db"),
           "unreachable": f"postgres://k3py:pw@127.0.0.1:{free_port()}/k3py"}[problem]
    out = k3py("server", "--data-dir", str(tmp_path / "d"), "--https-listen-port",
               str(free_port()), "--write-kubeconfig", str(tmp_path / "kc"),
               "--disable-agent", "--datastore-endpoint", dsn)
    line = one_line_error(out)
    words = {"wrong password": ["password authentication failed"],
             "missing database": ['database "no_such_db" does not exist'],
             "unreachable": ["Connection refused", "Connect call failed"]}[problem]
    assert any(w in line for w in words) and "datastore" in line, line
    assert "hunter2" not in line, line
    assert not (tmp_path / "kc").exists()
