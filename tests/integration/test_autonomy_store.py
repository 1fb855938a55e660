"""The stores on a full disk, through real processes: the server's and the agent's
metamanager's (kill -9 of the server under a write load is in test_store_kill9.py).

The full disks are small tmpfs mounts (root only; unmounted at teardown). The agent test uses
podman: run this module under the integration lock."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from k3py.agent.metamanager import DiskFullError, MetaManager
from k3py.tunnel.message import GROUP_RESOURCE, OP_INSERT, OP_SYNC, OP_UPDATE, new_message
from tests.harness import ServerProcess, clean_env, wait_for
from tests.integration.agents import (
    IMAGE,
    build_test_image,
    node_ready,
    podman_pods,
    remove_podman_pods,
    stop_proc,
)
from tests.integration.storeload import client_ssl, integrity

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "8m") -> Iterator[Path]:
    """A small tmpfs at `path` for the duration (skips the test where mounting is refused)."""
    path.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                          str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {out.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def fill(path: Path) -> Path:
    """Write `path` until its file system has no space left; delete it to free the space."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return path


def _api(srv: ServerProcess, ctx, method: str, path: str,
         body: dict | None = None) -> tuple[int, dict]:
    """(HTTP code, JSON body) of one request, a Status as well as an object."""
    req = urllib.request.Request(srv.url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_full_disk_refuses_writes_with_507_and_recovers(tmp_path):
    """The data dir on an 8 MiB tmpfs, filled up: a write that needs space is answered 507
    InsufficientStorage naming the store file (kubectl shows it), reads and the server go on
    (compaction keeps ticking under it), the file stays intact, and once the filler is deleted
    writes work again, without a restart; after one, only what was answered 201 is there."""
    big_file = tmp_path / "big.txt"
    big_file.write_text("x" * 400_000)
    big = {"v": big_file.read_text()}
    cms = "/api/v1/namespaces/default/configmaps"
    with tmpfs(tmp_path / "data") as data:
        srv = ServerProcess(data, extra_args=["--compact-interval", "0.2",
                                              "--compact-min-retain", "10"])
        srv.log_path = tmp_path / "server.log"  # off the full disk, to tell what happened
        db = data / "server" / "db" / "state.db"
        try:
            srv.start()
            ctx = client_ssl(srv)
            code, _ = _api(srv, ctx, "POST", cms, {"metadata": {"name": "before"},
                                                     "data": {"v": "1"}})
            assert code == 201
            filler = fill(data / "filler")
            answers = [_api(srv, ctx, "POST", cms, {"metadata": {"name": f"big-{i}"},
                                                      "data": big}) for i in range(20)]
            refused = [(i, body) for i, (code, body) in enumerate(answers) if code != 201]
            assert refused, "twenty 400 kB writes fitted on a full 8 MiB disk"
            for i, body in refused:
                assert answers[i][0] == 507, answers[i]
                assert body["reason"] == "InsufficientStorage", body
                assert "disk is full" in body["message"] and str(db) in body["message"], body
            out = srv.kubectl("create", "configmap", "by-kubectl", f"--from-file={big_file}",
                              check=False)
            assert out.returncode != 0
            assert "the datastore's disk is full" in out.stderr, out.stderr
            code, body = _api(srv, ctx, "PUT", f"{cms}/before",
                              {"metadata": {"name": "before"}, "data": big})
            assert code == 507, body

            code, body = _api(srv, ctx, "GET", f"{cms}/before")
            assert code == 200 and body["data"] == {"v": "1"}, body
            names = srv.kubectl("get", "configmaps", "-o", "name").stdout.split()
            assert "configmap/before" in names
            assert srv.proc.poll() is None, "the server died on a full disk"
            assert integrity(db) == "ok"

            filler.unlink()
            code, body = _api(srv, ctx, "POST", cms, {"metadata": {"name": "after"},
                                                       "data": big})
            assert code == 201, body
            srv.kubectl("create", "configmap", "by-kubectl", f"--from-file={big_file}")
        finally:
            srv.stop()
        assert integrity(db) == "ok"
        acked = {f"big-{i}" for i, (code, _) in enumerate(answers) if code == 201}
        srv.start()
        try:
            names = {n.split("/", 1)[1] for n in
                     srv.kubectl("get", "configmaps", "-o", "name").stdout.split()}
            assert names == {"kube-root-ca.crt", "before", "after", "by-kubectl"} | acked
        finally:
            srv.stop()


def _pod_message(name: str, annotation: str = "", op: str = OP_INSERT):
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}",
                        "annotations": {"big": annotation}}}
    return new_message(source="cloudhub", group=GROUP_RESOURCE, operation=op,
                       resource=f"pods/default/{name}", content=pod)


def test_metamanager_on_a_full_disk_persists_nothing_half_and_resumes(tmp_path):
    """meta.db on a full tmpfs: the agent still starts from it (no room for meta.db-shm); a
    pod or a sync snapshot that does not fit raises DiskFullError (edgehub then does not ACK
    it) and leaves the cache as it was, in memory and on disk; queueing and ACKing up messages
    do not raise (edgehub keeps them in memory); once space is freed the same writes succeed,
    and a reopen finds them, the file intact."""
    big = "x" * 300_000

    async def run(data: Path) -> None:
        path = str(data / "agent" / "meta.db")
        mm = MetaManager(path)
        await mm.open()
        assert await mm.apply(_pod_message("before"))
        await mm.close()
        filler = fill(data / "filler")
        mm = MetaManager(path)  # an agent restarted on the full disk
        await mm.open()
        assert [p["metadata"]["name"] for p in mm.pods()] == ["before"]
        with pytest.raises(DiskFullError, match="disk is full.*meta.db"):
            await mm.apply(_pod_message("while-full", big))
        sync = new_message(source="cloudhub", group=GROUP_RESOURCE, operation=OP_SYNC,
                           content={"pods": [_pod_message("synced", big).content]})
        with pytest.raises(DiskFullError):
            await mm.apply(sync)
        assert [p["metadata"]["name"] for p in mm.pods()] == ["before"]
        assert mm.disk_full
        status = new_message(source="edgehub", group=GROUP_RESOURCE, operation=OP_UPDATE,
                             resource="pods/default/before/status", key="s",
                             content={"status": {"phase": big}})
        await mm.queue(status)
        await mm.acked([status.id])

        filler.unlink()
        assert await mm.apply(_pod_message("while-full", big))
        assert not mm.disk_full
        assert await mm.apply(sync)
        assert await mm.apply(_pod_message("after"))
        await mm.close()
        assert integrity(Path(path)) == "ok"
        again = MetaManager(path)
        await again.open()
        assert sorted(p["metadata"]["name"] for p in again.pods()) == ["after", "synced"]
        assert again.queued() == []
        await again.close()

    with tmpfs(tmp_path / "data", size="2m") as data:
        asyncio.run(run(data))


def test_agent_on_a_full_disk_stays_up_and_gets_the_pod_once_space_is_back(server, tmp_path):
    """A real agent with its data dir on a full tmpfs: a pod bound to it does not fit in
    meta.db, so it is not ACKed; the agent stays up and Ready (its lease renewals still go out,
    kept in memory); once the filler is deleted the server's resend of the unACKed pod is
    persisted and the pod runs, on the same tunnel connection (a resend, not a resync)."""
    build_test_image(tmp_path / "busybox.tar")
    node = f"full-{uuid.uuid4().hex[:6]}"
    log_path = tmp_path / "agent.log"
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "while-full", "annotations": {"big": "x" * 200_000}},
           "spec": {"nodeName": node, "containers": [{
               "name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
               "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}]}}
    with tmpfs(tmp_path / "agent", size="16m") as data, open(log_path, "wb") as log:
        proc = subprocess.Popen(server.agent_command(data, node), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=clean_env())
        try:
            wait_for(lambda: node_ready(server, node), 60, 0.3, f"node {node} Ready")
            filler = fill(data / "filler")
            server.kubectl("create", "-f", "-", input=json.dumps(pod))
            wait_for(lambda: "persisting pods/default/while-full failed" in log_path.read_text(),
                     30, 0.2, "the agent to fail persisting the pod on the full disk")

            def renewed(after: str) -> str | None:
                t = server.kubectl_json("get", "lease", "-n", "kube-node-lease", node)[
                    "spec"]["renewTime"]
                return t if t > after else None
            full_since = renewed("")
            wait_for(lambda: renewed(full_since), 30, 0.5, "a lease renewal on the full disk")
            assert proc.poll() is None, "the agent died on a full disk"
            assert node_ready(server, node)
            assert podman_pods(node) == []

            filler.unlink()
            wait_for(lambda: server.kubectl_json("get", "pod", "while-full")["status"].get(
                "phase") == "Running", 90, 0.5, "the pod Running after space came back")
            assert log_path.read_text().count("tunnel connected") == 1
            assert integrity(data / "agent" / "meta.db") == "ok"
        finally:
            server.kubectl("delete", "pod", "while-full", "--wait=false", "--ignore-not-found",
                           check=False)
            stop_proc(proc)
            remove_podman_pods(node)
