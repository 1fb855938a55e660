"""The agent's claim volumes and local-path cleanup with a real MetaManager (SQLite in tmp) and
real directories: a claim resolved to its bound volume's directory (made 0777 for local-path,
read-only when the claim volume says so, ephemeral claims too), a pod waiting while its claim
is missing or unbound, and the removal of a deleted local-path volume's directory only when it
is that volume's own directory under the storage path and no pod of the node uses it."""

from __future__ import annotations

import os
import stat

import pytest

from k3py.agent.metamanager import MetaManager
from k3py.agent.pods import podspec
from k3py.agent.storage.claims import VolumeNotReady
from k3py.agent.storage.cleanup import VolumeCleanup
from k3py.api.localpath import CLEANUP_FINALIZER, PROVISIONER, removable_directory
from k3py.tunnel.message import OP_DELETE, OP_INSERT, Message, new_message, resource_key
from k3py.tunnel.protocol import volume_cleaned_resource

pytestmark = pytest.mark.unit

NODE = "edge-1"


async def _put(meta: MetaManager, kind: str, obj: dict) -> None:
    md = obj["metadata"]
    key = resource_key(kind, md.get("namespace"), md["name"])
    await meta.apply(new_message(source="cloudhub", group="resource", operation=OP_INSERT,
                                 resource=key, content=obj, key=key))


async def _drop(meta: MetaManager, kind: str, ns: str, name: str) -> None:
    key = resource_key(kind, ns, name)
    await meta.apply(new_message(source="cloudhub", group="resource", operation=OP_DELETE,
                                 resource=key, content={}, key=key))


def _claim(name: str, volume: str = "", phase: str = "Pending") -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}"},
            "spec": {"volumeName": volume} if volume else {}, "status": {"phase": phase}}


def _volume(root, claim: str, *, node: str = NODE, deleted: bool = False,
            path: str | None = None) -> dict:
    name = f"pvc-uid-{claim}"
    md: dict = {"name": name, "uid": f"pv-{claim}",
                "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                "finalizers": [CLEANUP_FINALIZER]}
    if deleted:
        md["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": md, "spec": {
        "hostPath": {"path": path or os.path.join(str(root), f"{name}_ns_{claim}"),
                     "type": "DirectoryOrCreate"},
        "claimRef": {"namespace": "ns", "name": claim, "uid": f"uid-{claim}"},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}}


def _pod(claim: str, *, read_only: bool = False, ephemeral: bool = False) -> dict:
    vol: dict = {"name": "data"}
    if ephemeral:
        vol["ephemeral"] = {"volumeClaimTemplate": {"spec": {}}}
    else:
        vol["persistentVolumeClaim"] = {"claimName": claim, "readOnly": read_only}
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "pod-1"},
            "spec": {"nodeName": NODE, "volumes": [vol], "containers": [
                {"name": "c", "image": "i", "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "data", "mountPath": "/sub", "subPath": "s"}]}]}}


async def test_claim_volume_waits_until_bound_then_mounts_its_directory(meta, tmp_path):
    root = tmp_path / "storage"
    pod = _pod("data")
    with pytest.raises(VolumeNotReady, match='persistentvolumeclaim "data" not found'):
        podspec.prepare_volumes(pod, meta, str(tmp_path / "vols"))
    await _put(meta, "persistentvolumeclaims", _claim("data"))
    with pytest.raises(VolumeNotReady, match='"data" is not bound'):
        podspec.prepare_volumes(pod, meta, str(tmp_path / "vols"))
    await _put(meta, "persistentvolumeclaims", _claim("data", "pvc-uid-data", "Bound"))
    with pytest.raises(VolumeNotReady, match='persistentvolume "pvc-uid-data" of claim'):
        podspec.prepare_volumes(pod, meta, str(tmp_path / "vols"))
    await _put(meta, "persistentvolumes", _volume(root, "data"))

    dirs = podspec.prepare_volumes(pod, meta, str(tmp_path / "vols"))
    path = str(root / "pvc-uid-data_ns_data")
    assert dirs == {"data": path}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o777  # any user of the pod may write
    assert stat.S_IMODE(os.stat(path + "/s").st_mode) == 0o777  # the subPath, made too
    (c,) = podspec.container_specs(pod, meta, dirs, "10.0.0.1")
    assert c["mounts"] == [(path, "/data", False), (path + "/s", "/sub", False)]
    ro = _pod("data", read_only=True)
    (c,) = podspec.container_specs(ro, meta, dirs, "10.0.0.1")
    assert [m[2] for m in c["mounts"]] == [True, True]


async def test_ephemeral_volume_uses_its_pod_claim(meta, tmp_path):
    await _put(meta, "persistentvolumeclaims", _claim("p-data", "pvc-uid-p-data", "Bound"))
    await _put(meta, "persistentvolumes", _volume(tmp_path, "p-data"))
    dirs = podspec.prepare_volumes(_pod("", ephemeral=True), meta, str(tmp_path / "vols"))
    assert dirs == {"data": str(tmp_path / "pvc-uid-p-data_ns_p-data")}


def test_removable_directory_is_only_the_volume_own_directory(tmp_path):
    root = str(tmp_path)
    assert removable_directory(_volume(root, "d", deleted=True), root) == \
        os.path.join(root, "pvc-uid-d_ns_d")
    assert removable_directory(_volume(root, "d"), root) is None  # not deleted
    for path in ("/etc", root, os.path.join(root, "pvc-uid-other_ns_d"),
                 os.path.join(root, "x", "..", "pvc-uid-d_ns_d"),
                 os.path.join(root, "sub", "pvc-uid-d_ns_d")):
        assert removable_directory(_volume(root, "d", deleted=True, path=path), root) is None
    assert removable_directory(_volume(root, "d", deleted=True), "/other") is None
    foreign = _volume(root, "d", deleted=True)
    foreign["metadata"]["annotations"] = {}
    assert removable_directory(foreign, root) is None  # not a local-path volume


class _Sent:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, msg: Message) -> None:
        self.messages.append(msg)


async def test_cleanup_removes_a_deleted_volume_directory_once_no_pod_uses_it(meta, tmp_path):
    root = tmp_path / "storage"
    sent = _Sent()
    cleanup = VolumeCleanup(meta, sent, node_name=NODE, storage_path=str(root))
    mine = root / "pvc-uid-d_ns_d"
    (mine / "sub").mkdir(parents=True)
    (mine / "sub" / "file").write_text("data")
    await _put(meta, "persistentvolumeclaims", _claim("d", "pvc-uid-d", "Bound"))
    await _put(meta, "pods", _pod("d"))
    await _put(meta, "persistentvolumes", _volume(root, "d", deleted=True))
    assert await cleanup.clean_once() == 0  # the pod still uses it
    assert mine.is_dir()

    await _drop(meta, "pods", "ns", "p")
    assert await cleanup.clean_once() == 1
    assert not mine.exists()
    (msg,) = sent.messages
    assert msg.route.resource == volume_cleaned_resource("pvc-uid-d")
    assert msg.content == {"uid": "pv-d"}
    assert await cleanup.clean_once() == 0  # reported once


async def test_cleanup_leaves_other_nodes_and_foreign_paths_alone(meta, tmp_path):
    root = tmp_path / "storage"
    sent = _Sent()
    cleanup = VolumeCleanup(meta, sent, node_name=NODE, storage_path=str(root))
    other_node = root / "pvc-uid-a_ns_a"
    other_node.mkdir(parents=True)
    await _put(meta, "persistentvolumes", _volume(root, "a", node="edge-2", deleted=True))
    outside = tmp_path / "precious"
    outside.mkdir()
    await _put(meta, "persistentvolumes", _volume(root, "b", deleted=True, path=str(outside)))
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").write_text("x")
    os.symlink(target, root / "pvc-uid-c_ns_c")
    await _put(meta, "persistentvolumes", _volume(root, "c", deleted=True))

    assert await cleanup.clean_once() == 0
    assert other_node.is_dir() and outside.is_dir() and (target / "keep").exists()
    assert sent.messages == []
