"""local-path storage through kubectl against a real server (no agent; a Node made with
kubectl): the default StorageClass, a claim Pending until a pod uses it, the pod scheduled and
the hostPath PV provisioned on its node under <data-dir>/storage, `kubectl get pvc,pv,sc`
columns, the PV deleted with its claim, and --disable local-storage removing the class."""

from __future__ import annotations

import json

import pytest

from tests.harness import ServerProcess, wait_for

pytestmark = pytest.mark.integration

NODE = """
apiVersion: v1
kind: Node
metadata: {name: edge-1, labels: {kubernetes.io/hostname: edge-1}}
"""
CLAIM = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
"""
POD = """
apiVersion: v1
kind: Pod
metadata: {name: writer, namespace: default}
spec:
  containers: [{name: c, image: busybox, command: [sleep, "3600"],
                volumeMounts: [{name: data, mountPath: /data}]}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
"""


def columns(srv: ServerProcess, *args: str) -> list[list[str]]:
    out = srv.kubectl("get", *args).stdout
    return [line.split() for line in out.splitlines()]


def reasons(srv: ServerProcess, name: str) -> list[str]:
    out = srv.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}",
                      "-o", "json").stdout
    return [e["reason"] for e in json.loads(out)["items"]]


def test_claim_waits_for_its_pod_then_gets_a_local_volume(server):
    srv = server
    rows = columns(srv, "storageclass")
    assert rows[0] == ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE",
                       "ALLOWVOLUMEEXPANSION", "AGE"]
    assert rows[1][:6] == ["local-path", "(default)", "rancher.io/local-path", "Delete",
                           "WaitForFirstConsumer", "false"]

    srv.kubectl("apply", "-f", "-", input=NODE)
    srv.kubectl("apply", "-f", "-", input=CLAIM)
    wait_for(lambda: "WaitForFirstConsumer" in reasons(srv, "data"), 30,
             what="WaitForFirstConsumer event")
    rows = columns(srv, "pvc")
    assert rows[0] == ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS", "MODES",
                       "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "AGE"]
    assert rows[1][:3] == ["data", "Pending", "local-path"]
    assert srv.kubectl("get", "pv").stderr.strip() == "No resources found"

    srv.kubectl("apply", "-f", "-", input=POD)
    node = wait_for(lambda: srv.kubectl_json("get", "pod", "writer")["spec"].get("nodeName"),
                    30, what="the pod scheduled")
    assert node == "edge-1"
    claim = wait_for(lambda: (c := srv.kubectl_json("get", "pvc", "data"))["status"]
                     .get("phase") == "Bound" and c, 30, what="the claim bound")
    uid = claim["metadata"]["uid"]
    assert claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == "edge-1"
    pv = srv.kubectl_json("get", "pv", f"pvc-{uid}")
    assert pv["spec"]["hostPath"]["path"] == \
        str(srv.data_dir / "storage" / f"pvc-{uid}_default_data")
    assert pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0][
        "matchExpressions"] == [{"key": "kubernetes.io/hostname", "operator": "In",
                                 "values": ["edge-1"]}]
    assert "ProvisioningSucceeded" in reasons(srv, "data")

    rows = columns(srv, "pvc,pv")
    assert rows[1][:7] == ["persistentvolumeclaim/data", "Bound", f"pvc-{uid}", "1Gi", "RWO",
                           "local-path", "<unset>"]
    pv_rows = [r for r in rows if r and r[0] == f"persistentvolume/pvc-{uid}"]
    assert pv_rows[0][1:8] == ["1Gi", "RWO", "Delete", "Bound", "default/data", "local-path",
                               "<unset>"]

    srv.kubectl("delete", "pod", "writer", "--grace-period=0", "--force")
    srv.kubectl("delete", "pvc", "data")
    wait_for(lambda: srv.kubectl("get", "pv", f"pvc-{uid}", check=False).returncode != 0, 30,
             what="the PV deleted with its claim")


def test_disable_local_storage_removes_the_class(server):
    srv = server
    srv.stop()
    srv.extra_args = ["--disable", "local-storage"]
    srv.start()
    out = srv.kubectl("get", "storageclass")
    assert out.stdout == "" and out.stderr.strip() == "No resources found"
