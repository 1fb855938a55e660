"""Storage object in-use protection against the real registry: new claims and volumes get
their protection finalizer, a claim deleted under a scheduled pod stays Terminating until the
pod is gone, a volume deleted while Bound stays until its claim is gone; an unscheduled pod
does not hold a claim."""

from __future__ import annotations

import pytest

from k3py.server.controllers.persistentvolume import PersistentVolumeController
from k3py.server.controllers.storageprotection import (
    PVCProtectionController,
    PVProtectionController,
    StorageObjectInUseProtection,
)
from tests.unit.controllers.test_core_support import cluster, eventually
from tests.unit.controllers.test_storage_binding import pv, pvc, wait_phase

pytestmark = pytest.mark.unit


def pod(name: str, claim: str, node: str = "n1") -> dict:
    spec = {"containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name}, "spec": spec}


async def test_claim_and_volume_kept_while_in_use(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        c.registry.admission.add_mutator("StorageObjectInUseProtection",
                                         StorageObjectInUseProtection())
        for ctrl in (PersistentVolumeController, PVCProtectionController,
                     PVProtectionController):
            await c.start(ctrl)
        await c.create("persistentvolumes", pv("vol", "1Gi"))
        claim = await c.create("persistentvolumeclaims", pvc("data", "1Gi"))
        assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
        assert (await c.get("persistentvolumes", None, "vol"))["metadata"]["finalizers"] == \
            ["kubernetes.io/pv-protection"]
        await wait_phase(c, "persistentvolumeclaims", "data", "Bound")
        await wait_phase(c, "persistentvolumes", "vol", "Bound")
        await c.create("pods", pod("user", "data"))
        await c.create("pods", pod("pending", "data", node=""))  # unscheduled: holds nothing

        await c.delete("persistentvolumeclaims", "default", "data")
        await c.delete("persistentvolumes", None, "vol")
        # the controllers had their chance: both still there, Terminating
        await c.create("persistentvolumeclaims", pvc("other", "1Gi"))
        await c.delete("persistentvolumeclaims", "default", "other")
        await eventually(lambda: _gone(c, "persistentvolumeclaims", "default", "other"),
                         what="an unused claim deleted at once")
        for plural, ns, name in (("persistentvolumeclaims", "default", "data"),
                                 ("persistentvolumes", None, "vol")):
            obj = await c.get(plural, ns, name)
            assert obj is not None and obj["metadata"].get("deletionTimestamp"), (plural, obj)

        await c.delete("pods", "default", "user", gracePeriodSeconds=0)
        await eventually(lambda: _gone(c, "persistentvolumeclaims", "default", "data"),
                         what="the claim gone with its pod")
        await eventually(lambda: _gone(c, "persistentvolumes", None, "vol"),
                         what="the volume gone with its claim")


async def _gone(c, plural: str, ns: str | None, name: str) -> bool:
    return await c.get(plural, ns, name) is None
