"""The PersistentVolume controller against the real registry: static binding by size, access
modes, class, volume mode and selector; pre-bound claims; phases and annotations of both
sides; events; Retain, Delete and a lost volume."""

from __future__ import annotations

import pytest

from k3py.server.controllers.persistentvolume import PersistentVolumeController
from tests.unit.controllers.test_core_support import cluster, eventually

pytestmark = pytest.mark.unit

SC = "storage.k8s.io"


def pv(name: str, size: str, modes=("ReadWriteOnce",), cls: str = "", labels=None,
       policy: str = "Retain", **spec) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}},
            "spec": {"capacity": {"storage": size}, "accessModes": list(modes),
                     "storageClassName": cls, "persistentVolumeReclaimPolicy": policy,
                     "hostPath": {"path": f"/tmp/{name}"}, **spec}}


def pvc(name: str, size: str, modes=("ReadWriteOnce",), cls: str | None = "", **spec) -> dict:
    s = {"accessModes": list(modes), "resources": {"requests": {"storage": size}}, **spec}
    if cls is not None:
        s["storageClassName"] = cls
    return {"metadata": {"name": name}, "spec": s}


async def phase(c, plural: str, name: str, ns: str | None = None) -> str:
    obj = await c.get(plural, ns if plural == "persistentvolumes" else ns or "default", name)
    return ((obj or {}).get("status") or {}).get("phase") or ""


async def wait_phase(c, plural: str, name: str, want: str) -> None:
    async def ok() -> bool:
        return await phase(c, plural, name) == want
    await eventually(ok, what=f"{plural}/{name} {want}")


async def wait_event(c, name: str, reason: str) -> tuple:
    async def found():
        return [e for e in await c.events("default") + await c.events(None)
                if e[0] == name and e[2] == reason]
    return (await eventually(found, what=f"{reason} event on {name}"))[0]


async def test_binds_the_smallest_volume_that_fits(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await c.start(PersistentVolumeController)
        await c.create("persistentvolumes", pv("small", "1Gi"))
        await c.create("persistentvolumes", pv("big", "10Gi"))
        await c.create("persistentvolumes", pv("medium", "5Gi"))
        await c.create("persistentvolumes", pv("medium-rox", "4Gi", modes=("ReadOnlyMany",)))
        for name in ("small", "big", "medium", "medium-rox"):
            await wait_phase(c, "persistentvolumes", name, "Available")
        await c.create("persistentvolumeclaims", pvc("data", "3Gi"))
        await wait_phase(c, "persistentvolumeclaims", "data", "Bound")
        claim = await c.get("persistentvolumeclaims", "default", "data")
        assert claim["spec"]["volumeName"] == "medium"
        assert claim["metadata"]["annotations"] == {"pv.kubernetes.io/bind-completed": "yes",
                                                    "pv.kubernetes.io/bound-by-controller": "yes"}
        assert claim["status"]["capacity"] == {"storage": "5Gi"}
        assert claim["status"]["accessModes"] == ["ReadWriteOnce"]
        await wait_phase(c, "persistentvolumes", "medium", "Bound")
        vol = await c.get("persistentvolumes", None, "medium")
        ref = vol["spec"]["claimRef"]
        assert (ref["kind"], ref["namespace"], ref["name"], ref["uid"]) == \
            ("PersistentVolumeClaim", "default", "data", claim["metadata"]["uid"])
        assert vol["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes"
        assert await phase(c, "persistentvolumes", "big") == "Available"


async def test_class_mode_and_selector_must_match(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await c.start(PersistentVolumeController)
        await c.create("persistentvolumes", pv("fast", "1Gi", cls="fast"))
        await c.create("persistentvolumes", pv("block", "1Gi", volumeMode="Block"))
        await c.create("persistentvolumes", pv("ssd", "1Gi", labels={"disk": "ssd"}))
        await c.create("persistentvolumeclaims", pvc("hdd", "1Gi", selector={
            "matchLabels": {"disk": "hdd"}}))
        ev = await wait_event(c, "hdd", "FailedBinding")
        assert ev[1:] == ("Normal", "FailedBinding", "no persistent volumes available for this "
                                                     "claim and no storage class is set")
        assert await phase(c, "persistentvolumeclaims", "hdd") == "Pending"
        await c.create("persistentvolumeclaims", pvc("want-ssd", "1Gi", selector={
            "matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}))
        await wait_phase(c, "persistentvolumeclaims", "want-ssd", "Bound")
        await c.create("persistentvolumeclaims", pvc("want-fast", "1Gi", cls="fast"))
        await wait_phase(c, "persistentvolumeclaims", "want-fast", "Bound")
        await c.create("persistentvolumeclaims", pvc("want-block", "1Gi", volumeMode="Block"))
        await wait_phase(c, "persistentvolumeclaims", "want-block", "Bound")
        names = {x["metadata"]["name"]: x["spec"]["volumeName"]
                 for x in await c.list("persistentvolumeclaims", "default")
                 if x["spec"].get("volumeName")}
        assert names == {"want-ssd": "ssd", "want-fast": "fast", "want-block": "block"}


async def test_pre_bound_claim_and_volume_mismatch(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await c.start(PersistentVolumeController)
        await c.create("persistentvolumes", pv("mine", "2Gi"))
        await c.create("persistentvolumes", pv("tiny", "1Mi"))
        await c.create("persistentvolumeclaims", pvc("named", "1Gi", volumeName="mine"))
        await wait_phase(c, "persistentvolumeclaims", "named", "Bound")
        claim = await c.get("persistentvolumeclaims", "default", "named")
        assert claim["metadata"]["annotations"] == {"pv.kubernetes.io/bind-completed": "yes"}
        await c.create("persistentvolumeclaims", pvc("too-big", "1Gi", volumeName="tiny"))
        ev = await wait_event(c, "too-big", "VolumeMismatch")
        assert ev[1:] == ("Warning", "VolumeMismatch",
                          'Cannot bind to requested volume "tiny": requested PV is too small')
        # a volume pre-bound to a claim by name waits for that claim only
        await c.create("persistentvolumes", pv("reserved", "1Gi", claimRef={
            "namespace": "default", "name": "later"}))
        await c.create("persistentvolumeclaims", pvc("other", "1Gi"))
        await wait_event(c, "other", "FailedBinding")
        await c.create("persistentvolumeclaims", pvc("later", "1Gi"))
        await wait_phase(c, "persistentvolumeclaims", "later", "Bound")
        assert (await c.get("persistentvolumeclaims", "default", "later"))["spec"][
            "volumeName"] == "reserved"


async def test_reclaim_retain_delete_and_lost(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await c.start(PersistentVolumeController)
        await c.create("persistentvolumes", pv("keep", "1Gi", labels={"k": "keep"}))
        await c.create("persistentvolumes", pv("drop", "1Gi", labels={"k": "drop"},
                                               policy="Delete"))
        await c.create("persistentvolumes", pv("gone", "1Gi", labels={"k": "gone"}))
        for k in ("keep", "drop", "gone"):
            await c.create("persistentvolumeclaims", pvc(f"c-{k}", "1Gi", selector={
                "matchLabels": {"k": k}}))
            await wait_phase(c, "persistentvolumeclaims", f"c-{k}", "Bound")
        await c.delete("persistentvolumeclaims", "default", "c-keep")
        await wait_phase(c, "persistentvolumes", "keep", "Released")
        # a released Retain volume is not offered again
        await c.create("persistentvolumeclaims", pvc("c-again", "1Gi", selector={
            "matchLabels": {"k": "keep"}}))
        await wait_event(c, "c-again", "FailedBinding")
        await c.delete("persistentvolumeclaims", "default", "c-drop")
        await wait_phase(c, "persistentvolumes", "drop", "Failed")
        ev = await wait_event(c, "drop", "VolumeFailedDelete")
        assert ev[1] == "Warning" and "no deletable volume plugin matched" in ev[3]
        await c.delete("persistentvolumes", None, "gone")
        await wait_phase(c, "persistentvolumeclaims", "c-gone", "Lost")
        ev = await wait_event(c, "c-gone", "ClaimLost")
        assert ev[1:] == ("Warning", "ClaimLost", "Bound claim has lost its PersistentVolume. "
                                                  "Data on the volume is lost!")


async def test_wait_for_first_consumer_and_external_provisioning(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await c.create("storageclasses", {
            "metadata": {"name": "later"}, "provisioner": "example.com/x",
            "volumeBindingMode": "WaitForFirstConsumer"}, group=SC)
        await c.create("storageclasses", {"metadata": {"name": "now"},
                                          "provisioner": "example.com/x"}, group=SC)
        await c.start(PersistentVolumeController)
        await c.create("persistentvolumeclaims", pvc("wffc", "1Gi", cls="later"))
        ev = await wait_event(c, "wffc", "WaitForFirstConsumer")
        assert ev[1:] == ("Normal", "WaitForFirstConsumer",
                          "waiting for first consumer to be created before binding")
        claim = await c.get("persistentvolumeclaims", "default", "wffc")
        assert "volume.kubernetes.io/storage-provisioner" not in \
            (claim["metadata"].get("annotations") or {})
        pvctl = c.controllers[0]
        await c.create("pods", {"metadata": {"name": "user"}, "spec": {
            "containers": [{"name": "c", "image": "x"}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "wffc2"}}]}})
        await eventually(lambda: pvctl.pods.get("default", "user"), what="pod in the cache")
        await c.create("persistentvolumeclaims", pvc("wffc2", "1Gi", cls="later"))
        ev = await wait_event(c, "wffc2", "WaitForPodScheduled")
        assert ev[3] == "waiting for pod user to be scheduled"

        await c.create("persistentvolumeclaims", pvc("imm", "1Gi", cls="now"))
        ev = await wait_event(c, "imm", "ExternalProvisioning")
        assert ev[3].startswith("Waiting for a volume to be created either by the external "
                                "provisioner 'example.com/x' or manually")
        claim = await c.get("persistentvolumeclaims", "default", "imm")
        ann = claim["metadata"]["annotations"]
        assert ann["volume.kubernetes.io/storage-provisioner"] == "example.com/x"
        assert ann["volume.beta.kubernetes.io/storage-provisioner"] == "example.com/x"
        assert claim["status"]["phase"] == "Pending"
