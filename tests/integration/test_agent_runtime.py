"""The pod syncer on real podman (no server): a desired pod runs as a podman pod with our
labels, its status goes up Running with a pod IP, a restarted syncer adopts it, and it is
removed when no longer desired. The runtime is the agent's: the libpod REST API, here with a
`podman system service` of its own.

Needs podman and the offline busybox image (airgap/build-test-image.sh); always removes its pods."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid

import pytest

from k3py.agent.metamanager import MetaManager
from k3py.agent.pods import PodSyncer
from k3py.agent.runtime.libpod import LibpodAPI
from k3py.agent.runtime.podman import LABEL_NODE
from k3py.tunnel.message import GROUP_RESOURCE, OP_DELETE, OP_INSERT, new_message
from tests.integration.agents import build_test_image

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("podman") is None, reason="needs podman")]

IMAGE = "k3py.local/busybox:latest"


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    return build_test_image(tmp_path_factory.mktemp("img") / "busybox.tar")


def _podman_pods(node: str) -> list[dict]:
    out = subprocess.run(["podman", "pod", "ps", "--format", "json", "--filter",
                          f"label={LABEL_NODE}={node}"], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out or "[]") or []


@pytest.fixture
def node():
    name = f"rt-{uuid.uuid4().hex[:6]}"
    yield name
    for p in _podman_pods(name):
        subprocess.run(["podman", "pod", "rm", "-f", "-t", "0", p["Id"]], capture_output=True)


@pytest.fixture
async def runtime(node, tmp_path):
    rt = LibpodAPI(agent_dir=str(tmp_path / "agent"), node_name=node)
    await rt.open()
    try:
        yield rt
    finally:
        await rt.close()


def _pod(uid: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default", "uid": uid},
            "spec": {"nodeName": "x", "restartPolicy": "Always", "containers": [
                {"name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                 "command": ["sh", "-c", "echo hello $GREETING; sleep 3600"],
                 "env": [{"name": "GREETING", "value": "k3py"}]}]}}


async def test_pod_runs_is_adopted_and_removed(image, node, tmp_path, runtime):
    meta = MetaManager(str(tmp_path / "meta.db"))
    await meta.open()
    sent = []

    async def send(msg):
        sent.append(msg)
    syncer = PodSyncer(meta=meta, runtime=runtime, send=send, data_dir=str(tmp_path),
                       node_name=node, host_ip="127.0.0.1")
    uid = str(uuid.uuid4())
    await meta.apply(new_message(source="t", group=GROUP_RESOURCE, operation=OP_INSERT,
                                 resource="pods/default/web", content=_pod(uid)))
    status = {}
    for _ in range(100):
        await syncer.sync_once()
        statuses = [m.content["status"] for m in sent if m.route.resource.endswith("/status")]
        status = statuses[-1] if statuses else {}  # (Events go up through `send` too)
        if status.get("phase") == "Running" and status.get("podIP"):
            break
        await asyncio.sleep(0.2)
    assert status["phase"] == "Running", status
    assert status["containerStatuses"][0]["ready"] is True
    assert len(_podman_pods(node)) == 1
    logs = b"".join([c async for c in runtime.logs(syncer.container_name("default", "web",
                                                                          "main"))])
    assert b"hello k3py" in logs

    # a new syncer (agent restart) adopts the pod instead of starting a second one
    again = PodSyncer(meta=meta, runtime=runtime, send=send, data_dir=str(tmp_path),
                      node_name=node, host_ip="127.0.0.1")
    await again.sync_once()
    assert len(_podman_pods(node)) == 1

    await meta.apply(new_message(source="t", group=GROUP_RESOURCE, operation=OP_DELETE,
                                 resource="pods/default/web", content=_pod(uid)))
    await again.sync_once()  # removal runs in the background (podman stop honours the grace)
    for _ in range(100):
        if not _podman_pods(node):
            break
        await asyncio.sleep(0.2)
    assert _podman_pods(node) == []
    await again.stop()
    await syncer.stop()
    await meta.close()


async def test_exit_is_reported_from_events_and_idle_passes_are_cheap(image, node, tmp_path,
                                                                     runtime):
    """A container exit reaches the status through podman's events (well before the periodic
    resync), a started pod reports Running by itself, nothing polls podman while idle, and a
    pass with nothing changed costs two API calls in total (list pods, list containers)."""
    meta = MetaManager(str(tmp_path / "meta.db"))
    await meta.open()
    sent = []

    async def send(msg):
        sent.append(msg)
    calls: list[tuple[str, ...]] = []
    call = runtime._call

    async def counting_call(*args, **kw):
        calls.append(args)
        return await call(*args, **kw)
    runtime._call = counting_call
    syncer = PodSyncer(meta=meta, runtime=runtime, send=send, data_dir=str(tmp_path),
                       node_name=node, host_ip="127.0.0.1")

    def status_of(name):
        for m in reversed(sent):
            if m.route.resource == f"pods/default/{name}/status":
                return m.content["status"]
        return {}
    pods = []
    for name, cmd, policy in (("idle", "sleep 3600", "Always"),
                              ("quits", "sleep 3; exit 3", "Never")):
        p = _pod(str(uuid.uuid4()))
        p["metadata"]["name"] = name
        p["spec"]["restartPolicy"] = policy
        p["spec"]["containers"][0]["command"] = ["sh", "-c", cmd]
        pods.append(p)
        await meta.apply(new_message(source="t", group=GROUP_RESOURCE, operation=OP_INSERT,
                                     resource=f"pods/default/{name}", content=p))
    syncer.start()
    try:
        for _ in range(150):
            if status_of("idle").get("phase") == "Running" and \
                    status_of("quits").get("phase") == "Failed":
                break
            await asyncio.sleep(0.1)
        assert syncer._events_ok  # the exit came through `podman events`, not a resync
        assert status_of("idle")["phase"] == "Running"
        assert status_of("idle")["podIP"]
        quits = status_of("quits")
        assert quits["phase"] == "Failed", quits
        assert quits["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
        await asyncio.sleep(1.5)  # events of the starts and the exit have come in
        calls.clear()
        await asyncio.sleep(2.5)
        assert calls == []  # idle: no polling between the (30 s) resyncs
        await syncer.sync_once()
        assert sorted(calls) == [("GET", "/containers/json"), ("GET", "/pods/json")], calls
    finally:
        await syncer.stop()
        await meta.close()
