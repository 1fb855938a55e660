"""The local-path provisioner with the PV controller and the scheduler against the real
registry: the default class, a claim waiting for its first consumer, the hostPath PV on the
chosen node, binding, deletion with the claim, provisioning errors, --disable local-storage."""

from __future__ import annotations

import pytest

from k3py.api import errors
from k3py.api.localpath import CLEANUP_FINALIZER
from k3py.config import ServerConfig
from k3py.server.bootstrap import authorizer_chain
from k3py.server.controllers.defaultclass import DefaultStorageClass, default_class_name
from k3py.server.controllers.ephemeral import EphemeralVolumeController
from k3py.server.controllers.localpath import (
    LocalPathProvisioner,
    ensure_local_path_class,
    local_path_class,
)
from k3py.server.controllers.persistentvolume import PersistentVolumeController
from k3py.server.controllers.statefulset import StatefulSetController
from k3py.server.edge.nodepassword import NodePasswords
from k3py.server.edge.upstream import UpstreamWriter
from k3py.server.scheduler.scheduler import Scheduler
from k3py.tunnel.message import EDGE, GROUP_RESOURCE, OP_UPDATE, new_message
from k3py.tunnel.protocol import volume_cleaned_resource
from tests.unit.controllers.test_core_support import cluster, eventually
from tests.unit.controllers.test_storage_binding import pvc, wait_event, wait_phase

pytestmark = pytest.mark.unit

SC = "storage.k8s.io"


def node(name: str) -> dict:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}


def pod(name: str, claim: str) -> dict:
    return {"metadata": {"name": name}, "spec": {
        "containers": [{"name": "c", "image": "x"}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}}


def authorizer_volume_terminating(c, name: str) -> bool:
    pv = c.ctx.informers.informer("", "persistentvolumes").get(None, name) or {}
    return bool(pv.get("metadata", {}).get("deletionTimestamp"))


async def storage_cluster(c, tmp_path, **config) -> None:
    c.ctx.config = ServerConfig(data_dir=str(tmp_path / "data"), **config)
    c.registry.admission.add_mutator("DefaultStorageClass", DefaultStorageClass(c.registry))
    await ensure_local_path_class(c.registry, True)
    await c.create("nodes", node("n1"))
    await c.create("nodes", node("n2"))
    await c.start(PersistentVolumeController)
    await c.start(LocalPathProvisioner)
    await c.start(Scheduler)


async def test_claim_waits_for_its_pod_then_gets_a_volume_on_its_node(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await storage_cluster(c, tmp_path)
        sc = await c.get("storageclasses", None, "local-path", group=SC)
        assert (sc["provisioner"], sc["reclaimPolicy"], sc["volumeBindingMode"]) == \
            ("rancher.io/local-path", "Delete", "WaitForFirstConsumer")
        assert sc["metadata"]["annotations"][
            "storageclass.kubernetes.io/is-default-class"] == "true"

        await c.create("persistentvolumeclaims", pvc("data", "2Gi", cls=None))
        claim = await c.get("persistentvolumeclaims", "default", "data")
        assert claim["spec"]["storageClassName"] == "local-path"  # the default class
        await wait_event(c, "data", "WaitForFirstConsumer")
        assert claim["status"]["phase"] == "Pending"
        assert not await c.list("persistentvolumes", None)

        await c.create("pods", pod("app", "data"))
        await wait_phase(c, "persistentvolumeclaims", "data", "Bound")

        async def scheduled():
            return (await c.get("pods", "default", "app"))["spec"].get("nodeName")
        chosen = await eventually(scheduled, what="pod bound")
        claim = await c.get("persistentvolumeclaims", "default", "data")
        uid = claim["metadata"]["uid"]
        assert claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == chosen
        assert claim["metadata"]["annotations"][
            "volume.kubernetes.io/storage-provisioner"] == "rancher.io/local-path"
        assert claim["spec"]["volumeName"] == f"pvc-{uid}"
        vol = await c.get("persistentvolumes", None, f"pvc-{uid}")
        spec = vol["spec"]
        assert spec["hostPath"] == {
            "path": str(tmp_path / "data" / "storage" / f"pvc-{uid}_default_data"),
            "type": "DirectoryOrCreate"}
        assert spec["nodeAffinity"] == {"required": {"nodeSelectorTerms": [{
            "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                  "values": [chosen]}]}]}}
        assert spec["capacity"] == {"storage": "2Gi"}
        assert spec["persistentVolumeReclaimPolicy"] == "Delete"
        assert spec["storageClassName"] == "local-path"
        assert spec["claimRef"]["uid"] == uid
        assert vol["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == \
            "rancher.io/local-path"
        await wait_phase(c, "persistentvolumes", f"pvc-{uid}", "Bound")
        ev = await wait_event(c, "data", "ProvisioningSucceeded")
        assert ev[3] == f"Successfully provisioned volume pvc-{uid}"
        await wait_event(c, "data", "Provisioning")

        # a second pod of the same claim follows the volume to its node
        await c.create("pods", pod("app-2", "data"))

        async def second():
            return (await c.get("pods", "default", "app-2"))["spec"].get("nodeName")
        assert await eventually(second, what="second pod bound") == chosen

        await c.delete("pods", "default", "app", gracePeriodSeconds=0)
        await c.delete("pods", "default", "app-2", gracePeriodSeconds=0)
        await c.delete("persistentvolumeclaims", "default", "data")

        async def pv_terminating():
            pv = await c.get("persistentvolumes", None, f"pvc-{uid}")
            return pv["metadata"].get("deletionTimestamp") and pv
        pv = await eventually(pv_terminating, what="the provisioned PV deleted with its claim")
        # kept until its node reports the directory removed (the agent's volume cleanup)
        assert pv["metadata"]["finalizers"] == [CLEANUP_FINALIZER]
        upstream = UpstreamWriter(c.registry, NodePasswords(c.registry),
                                  authorizer_chain(c.ctx.informers))
        await c.ctx.informers.wait_synced()
        await eventually(lambda: authorizer_volume_terminating(c, f"pvc-{uid}"),
                         what="the authorizer's informer has the deleted PV")
        other = next(n for n in ("n1", "n2") if n != chosen)
        cleaned = new_message(source=EDGE, group=GROUP_RESOURCE, operation=OP_UPDATE,
                              resource=volume_cleaned_resource(f"pvc-{uid}"),
                              content={"uid": pv["metadata"]["uid"]})
        with pytest.raises(errors.StatusError) as e:
            await upstream.write(other, cleaned)
        assert e.value.code == 403
        await upstream.write(chosen, cleaned)
        assert await c.get("persistentvolumes", None, f"pvc-{uid}") is None


async def test_storage_path_flag_retain_class_and_errors(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await storage_cluster(c, tmp_path, default_local_storage_path="/srv/k3py-pv")
        keep = {**local_path_class(), "metadata": {"name": "keep"}, "reclaimPolicy": "Retain"}
        await c.create("storageclasses", keep, group=SC)
        await c.create("persistentvolumeclaims", pvc("kept", "1Gi", cls="keep"))
        await c.create("pods", pod("user", "kept"))
        await wait_phase(c, "persistentvolumeclaims", "kept", "Bound")
        claim = await c.get("persistentvolumeclaims", "default", "kept")
        name = claim["spec"]["volumeName"]
        vol = await c.get("persistentvolumes", None, name)
        assert vol["spec"]["hostPath"]["path"] == f"/srv/k3py-pv/{name}_default_kept"
        assert vol["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        await c.delete("pods", "default", "user", gracePeriodSeconds=0)
        await c.delete("persistentvolumeclaims", "default", "kept")
        await wait_phase(c, "persistentvolumes", name, "Released")

        await c.create("persistentvolumeclaims", pvc("shared", "1Gi", cls="local-path",
                                                     modes=("ReadWriteMany",)))
        await c.create("pods", pod("rwx", "shared"))
        ev = await wait_event(c, "shared", "ProvisioningFailed")
        assert ev[1:] == ("Warning", "ProvisioningFailed", 'failed to provision volume with '
                          'StorageClass "local-path": NodePath only supports ReadWriteOnce '
                          'and ReadWriteOncePod (1.22+) access modes')


async def test_default_class_and_disable(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        c.registry.admission.add_mutator("DefaultStorageClass", DefaultStorageClass(c.registry))
        # no default class: a class-less claim stays class-less; "" is never defaulted
        await c.create("persistentvolumeclaims", pvc("before", "1Gi", cls=None))
        assert "storageClassName" not in \
            (await c.get("persistentvolumeclaims", "default", "before"))["spec"]
        await ensure_local_path_class(c.registry, True)
        await ensure_local_path_class(c.registry, True)  # idempotent at every start
        await c.create("persistentvolumeclaims", pvc("none", "1Gi", cls=""))
        assert (await c.get("persistentvolumeclaims", "default", "none"))["spec"][
            "storageClassName"] == ""
        newer = {**local_path_class(), "metadata": {"name": "newer", "annotations": {
            "storageclass.kubernetes.io/is-default-class": "true"},
            "creationTimestamp": "2999-01-01T00:00:00Z"}}
        assert default_class_name([local_path_class(), newer]) == "newer"

        await ensure_local_path_class(c.registry, False)
        assert await c.get("storageclasses", None, "local-path", group=SC) is None
        mine = {**local_path_class(), "metadata": {"name": "local-path"}}
        await c.create("storageclasses", mine, group=SC)
        await ensure_local_path_class(c.registry, False)
        assert await c.get("storageclasses", None, "local-path", group=SC) is not None


async def test_ephemeral_volume_gets_a_claim_owned_by_its_pod(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await storage_cluster(c, tmp_path)
        await c.start(EphemeralVolumeController)
        await c.create("pods", {"metadata": {"name": "scratch"}, "spec": {
            "containers": [{"name": "c", "image": "x"}],
            "volumes": [{"name": "tmp", "ephemeral": {"volumeClaimTemplate": {
                "metadata": {"labels": {"kind": "scratch"}},
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}}}}]}})
        await wait_phase(c, "persistentvolumeclaims", "scratch-tmp", "Bound")
        claim = await c.get("persistentvolumeclaims", "default", "scratch-tmp")
        pod_obj = await c.get("pods", "default", "scratch")
        assert claim["metadata"]["ownerReferences"][0]["uid"] == pod_obj["metadata"]["uid"]
        assert claim["metadata"]["labels"] == {"kind": "scratch"}
        assert claim["spec"]["storageClassName"] == "local-path"

        async def scheduled():
            return (await c.get("pods", "default", "scratch"))["spec"].get("nodeName")
        await eventually(scheduled, what="pod with an ephemeral volume bound")

        # a claim of that name that the pod does not own is refused, as upstream
        await c.create("persistentvolumeclaims", pvc("squat-tmp", "1Gi"))
        await c.create("pods", {"metadata": {"name": "squat"}, "spec": {
            "containers": [{"name": "c", "image": "x"}],
            "volumes": [{"name": "tmp", "ephemeral": {"volumeClaimTemplate": {
                "spec": {"accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}}}}]}})

        async def refused():
            p = await c.get("pods", "default", "squat")
            return [x["message"] for x in (p.get("status") or {}).get("conditions") or []
                    if x["type"] == "PodScheduled"]
        msg = (await eventually(refused, what="squat unschedulable"))[0]
        assert "PVC default/squat-tmp was not created for pod default/squat (pod is not " \
               "owner)" in msg


async def test_statefulset_claims_get_volumes_on_their_pods_nodes(tmp_path) -> None:
    async with cluster(tmp_path) as c:
        await storage_cluster(c, tmp_path)
        await c.start(StatefulSetController)
        await c.create("statefulsets", {
            "metadata": {"name": "db"},
            "spec": {"replicas": 2, "serviceName": "db",
                     "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db"}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                         "accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}}}]}})
        for i in range(2):
            await wait_phase(c, "persistentvolumeclaims", f"data-db-{i}", "Bound")

            async def placed(i=i):
                return (await c.get("pods", "default", f"db-{i}"))["spec"].get("nodeName")
            node_name = await eventually(placed, what=f"db-{i} scheduled")
            claim = await c.get("persistentvolumeclaims", "default", f"data-db-{i}")
            vol = await c.get("persistentvolumes", None, claim["spec"]["volumeName"])
            assert vol["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0][
                "matchExpressions"][0]["values"] == [node_name]
            await c.set_pod_status(f"db-{i}")
