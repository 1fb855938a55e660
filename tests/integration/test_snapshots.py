"""`k3py snapshot` against one real server: a snapshot taken while a writer creates ConfigMaps
is one consistent cut of the writes, and `k3py server --cluster-reset
--cluster-reset-restore-path` brings back exactly its objects; `ls` columns as K3s's, prune
keeps N, delete, restore refused under a live server, PostgreSQL answered with one line."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

import apsw
import pytest

from tests.harness import ServerProcess, clean_env, wait_for

pytestmark = pytest.mark.integration

WRITES_MAX = 2000  # the writer's bound in count
WRITE_SECONDS = 20.0  # and in time


def k3py(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "k3py", *args], capture_output=True,
                          text=True, timeout=60, env=clean_env())


def configmaps_in_snapshot(path: str) -> set[str]:
    """The writer's ConfigMaps that the snapshot file holds (newest row per key, not a
    tombstone), read straight from the file."""
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = conn.execute(
            "SELECT k.name FROM kine AS k WHERE k.name LIKE '/registry/core/configmaps/default/load-%' "
            "AND k.deleted = 0 AND k.id = (SELECT MAX(id) FROM kine WHERE name = k.name)"
        ).fetchall()
    finally:
        conn.close()
    return {name.rsplit("/", 1)[1] for (name,) in rows}


def served_configmaps(server: ServerProcess) -> set[str]:
    """The writer's ConfigMaps that the server serves."""
    out = server.kubectl("get", "configmaps", "-n", "default", "-o", "name").stdout
    names = {line.removeprefix("configmap/") for line in out.split()}
    return {n for n in names if n.startswith("load-")}


class Writer(threading.Thread):
    """Creates load-0, load-1, ... one after the other until stopped or bounded."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.done = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from kubernetes import client
        try:
            api = client.CoreV1Api(self.server.client())
            deadline = time.monotonic() + WRITE_SECONDS
            while not self.stop.is_set() and self.done < WRITES_MAX and \
                    time.monotonic() < deadline:
                api.create_namespaced_config_map("default", client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(name=f"load-{self.done}"),
                    data={"i": str(self.done)}))
                self.done += 1
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e


def test_snapshot_under_load_restores_its_objects(tmp_path):
    server = ServerProcess(tmp_path / "data", extra_args=["--snapshot-retention", "2"]).start()
    data = ["--data-dir", str(server.data_dir), "--node-name", "n1"]
    try:
        writer = Writer(server)
        writer.start()
        wait_for(lambda: writer.done >= 20 or writer.error, 30, what="20 ConfigMaps written")
        saved = k3py("snapshot", "save", "--name", "load", *data)
        writer.stop.set()
        writer.join(30)
        assert writer.error is None, writer.error
        assert saved.returncode == 0, saved.stderr
        name = re.fullmatch(r"Snapshot (load-n1-\d+) saved\.", saved.stdout.strip())[1]
        path = server.data_dir / "server" / "db" / "snapshots" / name

        in_snapshot = configmaps_in_snapshot(str(path))
        # one consistent cut of sequential writes: load-0 .. load-(k-1), no gap
        assert in_snapshot == {f"load-{i}" for i in range(len(in_snapshot))}
        assert 20 <= len(in_snapshot) <= writer.done

        # ls: K3s's columns, the Location a file:// URL
        for extra in ("p-1", "p-2", "p-3"):
            assert k3py("snapshot", "save", "--name", extra, *data).returncode == 0
        lines = k3py("snapshot", "ls", *data).stdout.splitlines()
        assert lines[0].split() == ["Name", "Location", "Size", "Created"]
        rows = {line.split()[0]: line.split() for line in lines[1:]}
        assert rows[name][1] == f"file://{path}"
        assert int(rows[name][2]) == path.stat().st_size
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows[name][3])

        # prune keeps the newest N of one name; delete removes one by name
        out = k3py("snapshot", "prune", "--name", "p", "--snapshot-retention", "2", *data)
        assert out.returncode == 0, out.stderr
        names = [line.split()[0] for line in k3py("snapshot", "ls", *data).stdout.splitlines()]
        assert sorted(n.rsplit("-", 2)[0] for n in names[1:]) == ["load", "p-2", "p-3"]
        p2 = next(n for n in names if n.startswith("p-2-"))
        assert k3py("snapshot", "delete", p2, *data).returncode == 0
        missing = k3py("snapshot", "delete", p2, *data)
        assert missing.returncode == 1 and "no snapshot" in missing.stderr

        # a live server's store is not replaced
        reset = [*server.command()[3:], "--cluster-reset", "--cluster-reset-restore-path",
                 str(path)]
        busy = k3py(*reset)
        assert busy.returncode == 1 and "in use" in busy.stderr, busy.stderr

        server.stop()
        done = k3py(*reset)
        assert done.returncode == 0, done.stderr
        assert "Restart without --cluster-reset" in done.stdout
        server.start()
        assert served_configmaps(server) == in_snapshot
    finally:
        server.stop()


def test_postgres_datastore_is_the_databases_job(tmp_path):
    out = k3py("snapshot", "save", "--data-dir", str(tmp_path),
               "--datastore-endpoint", "postgres://k3py:secret@db.example:5432/k3py")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "pg_dump" in out.stderr
    assert "secret" not in out.stderr
