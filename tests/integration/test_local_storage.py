"""local-path storage through kubectl against a real server: the default StorageClass, a claim
Pending until a pod uses it, the pod scheduled and the hostPath PV provisioned on its node under
<data-dir>/storage, `kubectl get pvc,pv,sc` columns, the PV deleted with its claim (a Node made
with kubectl, no agent); then with a real `k3py agent` joined to the same server: a claim's
directory made and mounted, its data kept across the pod's deletion, an offline agent restart
that recreates the pod (podman pods removed, as a reboot leaves them) and a server restart, the
directory removed with the claim (which stays Terminating while its pod runs:
pvc-protection); a pod waiting in ContainerCreating for its claim, a read-only
claim; a StatefulSet's volumeClaimTemplates, on one node and (a server of its own) on two
nodes in network namespaces; and last, --disable local-storage removing the class."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.harness import ServerProcess, clean_env, wait_for
from tests.integration.agents import (
    IMAGE,
    build_test_image,
    node_ready,
    remove_podman_pods,
    stop_proc,
)
from tests.integration.netns import NetNS, require_netns

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
    # deleted, and kept until its node removes the directory: edge-1 has no agent, so an
    # administrator drops the finalizer by hand (what a node that is gone for good needs)
    pv = wait_for(lambda: (v := srv.kubectl_json("get", "pv", f"pvc-{uid}"))["metadata"]
                  .get("deletionTimestamp") and v, 30, what="the PV deleted with its claim")
    assert pv["metadata"]["finalizers"] == ["k3py.io/local-path-directory"]
    srv.kubectl("patch", "pv", f"pvc-{uid}", "--type=json",
                "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]')
    wait_for(lambda: srv.kubectl("get", "pv", f"pvc-{uid}", check=False).returncode != 0, 30,
             what="the PV gone")


class Agent:
    """A `k3py agent` process joined to `srv` (same machine, the server's storage path), in
    the network namespace `ns` when given; stopped and its podman pods removed by its owner."""

    def __init__(self, srv: ServerProcess, tmp: Path, ns: NetNS | None = None) -> None:
        self.srv, self.tmp, self.ns = srv, tmp, ns
        self.name = f"store-{uuid.uuid4().hex[:6]}"
        self.storage = srv.data_dir / "storage"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        url = f"https://{self.ns.host_ip}:{self.srv.port}" if self.ns else ""
        cmd = self.srv.agent_command(self.tmp / self.name, self.name,
                                     "--default-local-storage-path", str(self.storage),
                                     server=url)
        with open(self.tmp / f"{self.name}.log", "ab") as log:
            kw = {"stdout": log, "stderr": subprocess.STDOUT, "env": clean_env()}
            self.proc = self.ns.popen(cmd, **kw) if self.ns else \
                subprocess.Popen(cmd, start_new_session=True, **kw)

    def stop(self) -> None:
        if self.proc is not None:
            stop_proc(self.proc)
        remove_podman_pods(self.name, self.ns)

    def podman_cat(self, pod: str, path: str) -> str:
        """`cat path` in the pod's container `c` straight through podman (no server needed)."""
        out = subprocess.run(["podman", "ps", "-q", "--filter", f"label=io.k3py.node={self.name}",
                              "--filter", f"label=io.k3py.pod-name={pod}",
                              "--filter", "label=io.k3py.container=c"],
                             capture_output=True, text=True, timeout=30)
        ids = out.stdout.split()
        if not ids:
            return ""
        return subprocess.run(["podman", "exec", ids[0], "cat", path], capture_output=True,
                              text=True, timeout=30).stdout


@pytest.fixture(scope="module")
def agent(server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agent")
    build_test_image(tmp / "busybox.tar")
    server.kubectl("delete", "node", "edge-1", "--ignore-not-found")  # the first test's
    a = Agent(server, tmp)
    try:
        a.start()
        wait_for(lambda: node_ready(server, a.name), 60, 0.3, f"node {a.name} Ready")
        yield a
    finally:
        a.stop()


def claim(name: str, **spec) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": name, "namespace": "default"},
                       "spec": {"accessModes": ["ReadWriteOnce"],
                                "resources": {"requests": {"storage": "1Gi"}}, **spec}})


def claim_pod(name: str, node: str, claim_name: str, script: str, *, by_name: bool = False,
              read_only: bool = False) -> str:
    """A busybox pod running `script` (then idling, TERM ends it) with the claim at /data;
    `by_name`: bound to the node directly (no scheduler), else by nodeSelector."""
    spec: dict = {"terminationGracePeriodSeconds": 2,
                  "containers": [{"name": "c", "image": IMAGE,
                                  "imagePullPolicy": "IfNotPresent",
                                  "command": ["sh", "-c", f"{script}; trap 'exit 0' TERM; "
                                              "while true; do sleep 1; done"],
                                  "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                  "volumes": [{"name": "data", "persistentVolumeClaim": {
                      "claimName": claim_name, "readOnly": read_only}}]}
    if by_name:
        spec["nodeName"] = node
    else:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return json.dumps({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": name, "namespace": "default"}, "spec": spec})


def running(srv: ServerProcess, name: str, timeout: float = 60) -> dict:
    return wait_for(lambda: (p := srv.kubectl_json("get", "pod", name))["status"]
                    .get("phase") == "Running" and p, timeout, 0.3, f"pod {name} Running")


def cat(srv: ServerProcess, pod: str, path: str) -> str:
    return srv.kubectl("exec", pod, "--", "cat", path).stdout


def test_claim_data_outlives_pods_and_restarts_and_goes_with_the_claim(server, agent):
    srv = server
    srv.kubectl("apply", "-f", "-", input=claim("keep"))
    srv.kubectl("apply", "-f", "-", input=claim_pod("writer", agent.name, "keep",
                                                    "echo hello > /data/hello"))
    running(srv, "writer")
    uid = srv.kubectl_json("get", "pvc", "keep")["metadata"]["uid"]
    path = agent.storage / f"pvc-{uid}_default_keep"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o777  # as local-path-provisioner makes it
    wait_for(lambda: (path / "hello").exists(), 30, 0.2, "the file on the host")
    assert (path / "hello").read_text() == "hello\n"

    srv.kubectl("delete", "pod", "writer")
    srv.kubectl("apply", "-f", "-", input=claim_pod("reader", agent.name, "keep", "true"))
    running(srv, "reader")
    assert cat(srv, "reader", "/data/hello") == "hello\n"

    # reboot of the node while the server is down: the agent recreates the pod from its cache
    srv.stop()
    agent.stop()  # (and its pods removed)
    agent.start()
    wait_for(lambda: agent.podman_cat("reader", "/data/hello") == "hello\n", 60, 0.5,
             "the pod recreated offline with its volume")
    srv.start()
    wait_for(lambda: cat(srv, "reader", "/data/hello") == "hello\n", 60, 0.5,
             "kubectl exec through the node's tunnel, back")

    # pvc-protection: the claim deleted under its pod stays Terminating, the pod keeps it
    srv.kubectl("delete", "pvc", "keep", "--wait=false")
    held = srv.kubectl_json("get", "pvc", "keep")
    assert held["metadata"].get("deletionTimestamp") and \
        held["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"], held["metadata"]
    assert "Terminating" in srv.kubectl("get", "pvc", "keep").stdout
    assert cat(srv, "reader", "/data/hello") == "hello\n"
    srv.kubectl("delete", "pod", "reader")
    wait_for(lambda: srv.kubectl("get", "pv", f"pvc-{uid}", check=False).returncode != 0, 60,
             0.3, "the PV deleted with its claim")
    assert not path.exists()


def test_pod_waits_for_its_claim_and_read_only_claims(server, agent, tmp_path):
    srv = server
    srv.kubectl("apply", "-f", "-", input=claim_pod("early", agent.name, "late",
                                                    "touch /data/x && echo rw || echo ro",
                                                    by_name=True, read_only=True))

    def waiting():
        st = srv.kubectl_json("get", "pod", "early")["status"]
        w = (st.get("containerStatuses") or [{}])[0].get("state", {}).get("waiting") or {}
        return st.get("phase") == "Pending" and w
    w = wait_for(waiting, 30, 0.3, "the pod waiting for its claim")
    assert w["reason"] == "ContainerCreating"
    assert w["message"] == 'persistentvolumeclaim "late" not found'
    wait_for(lambda: "FailedMount" in reasons(srv, "early"), 30, 0.3, "a FailedMount event")

    static = tmp_path / "static"  # a static hostPath volume (no class), bound right away
    srv.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "static-pv"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "", "hostPath": {"path": str(static),
                                                      "type": "DirectoryOrCreate"}}}))
    srv.kubectl("apply", "-f", "-", input=claim("late", storageClassName="",
                                                volumeName="static-pv"))
    running(srv, "early")
    assert static.is_dir()
    logs = wait_for(lambda: {"ro", "rw"} & set((out := srv.kubectl("logs", "early").stdout)
                                              .splitlines()) and out, 30, 0.3, "the pod's output")
    assert "ro" in logs.splitlines() and "rw" not in logs.splitlines(), logs
    assert not (static / "x").exists()
    srv.kubectl("delete", "pod", "early", "--grace-period=0", "--force")
    srv.kubectl("delete", "pvc", "late")
    srv.kubectl("delete", "pv", "static-pv")


STATEFULSET = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: NAME, namespace: default}
spec:
  replicas: 2
  serviceName: web
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      nodeSelector: {kubernetes.io/hostname: NODE}
      containers:
      - name: c
        image: IMAGE
        imagePullPolicy: IfNotPresent
        command: [sh, -c, "[ -f /data/id ] || cat /proc/sys/kernel/random/uuid > /data/id;
                  trap 'exit 0' TERM; while true; do sleep 1; done"]
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"""


def test_statefulset_claims_keep_each_replica_data(server, agent):
    srv = server
    srv.kubectl("apply", "-f", "-", input=STATEFULSET.replace("NAME", "web").replace(
        "NODE", agent.name).replace("IMAGE", IMAGE))
    running(srv, "web-0")
    running(srv, "web-1")
    ids = {p: wait_for(lambda p=p: cat(srv, p, "/data/id"), 30, 0.3, f"{p}'s id")
           for p in ("web-0", "web-1")}
    assert ids["web-0"] != ids["web-1"]
    rows = columns(srv, "pvc", "-l", "app=web")
    assert sorted((r[0], r[1], r[5]) for r in rows[1:]) == [
        ("data-web-0", "Bound", "local-path"), ("data-web-1", "Bound", "local-path")]

    old_uid = srv.kubectl_json("get", "pod", "web-0")["metadata"]["uid"]
    srv.kubectl("delete", "pod", "web-0")
    wait_for(lambda: (p := srv.kubectl_json("get", "pod", "web-0"))["metadata"]["uid"]
             != old_uid and p["status"].get("phase") == "Running", 60, 0.3,
             "web-0 recreated")
    assert cat(srv, "web-0", "/data/id") == ids["web-0"]

    claims = {c: srv.kubectl_json("get", "pvc", c)["metadata"]["uid"]
              for c in ("data-web-0", "data-web-1")}
    srv.kubectl("delete", "statefulset", "web")
    wait_for(lambda: not srv.kubectl_json("get", "pods", "-l", "app=web")["items"], 60, 0.3,
             "the replicas gone")
    srv.kubectl("delete", "pvc", "data-web-0", "data-web-1")
    for c, uid in claims.items():
        wait_for(lambda uid=uid, c=c: not (agent.storage / f"pvc-{uid}_default_{c}").exists(),
                 60, 0.3, f"{c}'s directory removed")


def test_statefulset_on_two_nodes(tmp_path):
    """Two nodes, each an agent in its own network namespace: the replicas spread over them,
    each claim's volume is made on its replica's node, and each replica comes back there with
    its data."""
    require_netns()
    build_test_image(tmp_path / "busybox.tar")
    with NetNS() as ns_a, NetNS() as ns_b:
        srv = ServerProcess(tmp_path / "server", extra_args=[
            "--bind-address", "0.0.0.0", "--advertise-address", ns_a.host_ip,
            "--tls-san", ns_b.host_ip])
        agents = [Agent(srv, tmp_path, ns_a), Agent(srv, tmp_path, ns_b)]
        try:
            srv.start()
            for a in agents:
                a.start()
            for a in agents:
                wait_for(lambda a=a: node_ready(srv, a.name), 60, 0.3, f"node {a.name} Ready")
            spread = STATEFULSET.replace("NAME", "db").replace("IMAGE", IMAGE).replace(
                "      nodeSelector: {kubernetes.io/hostname: NODE}\n", "")
            srv.kubectl("apply", "-f", "-", input=spread.replace("app: web", "app: db"))
            pods = {p: running(srv, p) for p in ("db-0", "db-1")}
            nodes = {p: pod["spec"]["nodeName"] for p, pod in pods.items()}
            assert sorted(nodes.values()) == sorted(a.name for a in agents)
            ids = {p: wait_for(lambda p=p: cat(srv, p, "/data/id"), 30, 0.3, f"{p}'s id")
                   for p in nodes}
            for p, node in nodes.items():
                pv = srv.kubectl_json("get", "pvc", f"data-{p}")["spec"]["volumeName"]
                affinity = srv.kubectl_json("get", "pv", pv)["spec"]["nodeAffinity"]
                assert affinity["required"]["nodeSelectorTerms"][0]["matchExpressions"][0][
                    "values"] == [node]

            srv.kubectl("delete", "pod", "db-0", "db-1")
            for p, node in nodes.items():
                back = wait_for(lambda p=p: (q := srv.kubectl_json("get", "pod", p))[
                    "metadata"]["uid"] != pods[p]["metadata"]["uid"] and
                    q["status"].get("phase") == "Running" and q, 60, 0.3, f"{p} recreated")
                assert back["spec"]["nodeName"] == node
                assert cat(srv, p, "/data/id") == ids[p]
        finally:
            for a in agents:
                a.stop()
            srv.stop()


def test_disable_local_storage_removes_the_class(server):
    srv = server
    srv.stop()
    srv.extra_args = ["--disable", "local-storage"]
    srv.start()
    out = srv.kubectl("get", "storageclass")
    assert out.stdout == "" and out.stderr.strip() == "No resources found"
