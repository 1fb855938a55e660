"""The pod spec on real podman: env (value, configMapKeyRef, secretKeyRef, fieldRef, envFrom
with prefix), workingDir, configMap / secret / hostPath / emptyDir volumes (shared between
containers, readOnly honoured), securityContext runAsUser / runAsGroup / privileged, tty,
hostNetwork and hostPort. Checked from inside the containers with `kubectl exec`.

One `k3py server` with its embedded agent for the module (tests/integration/agents.py)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.harness import free_port, wait_for
from tests.integration.agents import IMAGE, embedded_node

pytestmark = pytest.mark.integration

SLEEP = "trap 'exit 0' TERM; while true; do sleep 1; done"


def _c(name: str, script: str = SLEEP, **extra) -> dict:
    return {"name": name, "image": IMAGE, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", script], **extra}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("podspec")
    host_dir = tmp / "host-dir"
    host_dir.mkdir()
    (host_dir / "from-host.txt").write_text("host-file-content\n")
    with embedded_node(tmp, "spec", timeout=30) as srv:
        host_port = free_port()
        objs = [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
             "data": {"greeting": "hello-cm", "color": "blue"}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"},
             "stringData": {"password": "s3cret", "user": "admin"}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "full",
                                                             "labels": {"app": "full"}},
             "spec": {"nodeName": srv.node, "terminationGracePeriodSeconds": 1,
                      "volumes": [
                          {"name": "cm", "configMap": {"name": "cfg"}},
                          {"name": "sec", "secret": {"secretName": "sec"}},
                          {"name": "host", "hostPath": {"path": str(host_dir)}},
                          {"name": "shared", "emptyDir": {}}],
                      "containers": [
                          _c("main", env=[
                              {"name": "PLAIN", "value": "plain-value"},
                              {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {
                                  "name": "cfg", "key": "greeting"}}},
                              {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {
                                  "name": "sec", "key": "password"}}},
                              {"name": "MY_POD", "valueFrom": {"fieldRef": {
                                  "fieldPath": "metadata.name"}}},
                              {"name": "MY_LABEL", "valueFrom": {"fieldRef": {
                                  "fieldPath": "metadata.labels['app']"}}}],
                             envFrom=[{"configMapRef": {"name": "cfg"}, "prefix": "CM_"},
                                      {"secretRef": {"name": "sec"}}],
                             workingDir="/work-dir",
                             volumeMounts=[
                                 {"name": "cm", "mountPath": "/etc/cm"},
                                 {"name": "sec", "mountPath": "/etc/sec"},
                                 {"name": "host", "mountPath": "/host", "readOnly": True},
                                 {"name": "shared", "mountPath": "/shared"}]),
                          _c("user", securityContext={"runAsUser": 1000, "runAsGroup": 2000},
                             volumeMounts=[{"name": "shared", "mountPath": "/data"}]),
                          _c("priv", securityContext={"privileged": True}),
                          _c("term", tty=True, stdin=True)]}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hostnet"},
             "spec": {"nodeName": srv.node, "hostNetwork": True,
                      "terminationGracePeriodSeconds": 1, "containers": [_c("c")]}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hostport"},
             "spec": {"nodeName": srv.node, "terminationGracePeriodSeconds": 1,
                      "containers": [_c(
                          "web", "mkdir -p /www && echo via-host-port > /www/index.html && "
                                 "exec httpd -f -p 8080 -h /www",
                          ports=[{"containerPort": 8080, "hostPort": host_port}])]}},
        ]
        srv.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in objs))

        def running():
            pods = srv.kubectl_json("get", "pods")["items"]
            return len(pods) == 3 and all(p["status"].get("phase") == "Running" and all(
                c.get("ready") for c in p["status"].get("containerStatuses") or [{}])
                for p in pods)
        try:
            wait_for(running, 60, 0.3, "pods Running and ready")
        except TimeoutError:  # say why: the pods and the agent's last log lines
            print(srv.kubectl("get", "pods", "-o", "yaml").stdout[-6000:])
            print(srv.log_path.read_text()[-3000:])
            raise
        srv.host_port = host_port
        yield srv


def _exec(srv, pod: str, container: str, script: str) -> str:
    return srv.kubectl("exec", pod, "-c", container, "--", "sh", "-c", script).stdout


def test_env_from_values_configmaps_secrets_and_fields(cluster):
    env = dict(line.split("=", 1) for line in _exec(cluster, "full", "main", "env").splitlines()
               if "=" in line)
    assert env["PLAIN"] == "plain-value"
    assert env["FROM_CM"] == "hello-cm"
    assert env["FROM_SECRET"] == "s3cret"
    assert env["MY_POD"] == "full"
    assert env["MY_LABEL"] == "full"
    assert env["CM_greeting"] == "hello-cm" and env["CM_color"] == "blue"
    assert env["password"] == "s3cret" and env["user"] == "admin"


def test_the_nodes_cache_holds_the_secret_only_sealed(cluster):
    """The pod got its secret, and the agent's meta.db (and its WAL) hold the Secret and the
    pod's service-account token only sealed with the node key (meta.key, 0600)."""
    agent_dir = cluster.data_dir / "agent"
    assert (agent_dir / "meta.key").stat().st_mode & 0o777 == 0o600
    token = cluster.kubectl("exec", "full", "-c", "main", "--", "cat",
                            "/var/run/secrets/kubernetes.io/serviceaccount/token").stdout
    for name in ("meta.db", "meta.db-wal"):
        path = agent_dir / name
        if path.exists():
            held = path.read_bytes()
            for value in (b"czNjcmV0", b"s3cret", token.split(".")[2][:40].encode()):
                assert value not in held, (name, value)


def test_working_dir_and_volumes(cluster):
    assert _exec(cluster, "full", "main", "pwd").strip() == "/work-dir"
    assert _exec(cluster, "full", "main", "cat /etc/cm/greeting") == "hello-cm"
    assert _exec(cluster, "full", "main", "cat /etc/sec/password") == "s3cret"
    assert _exec(cluster, "full", "main", "cat /host/from-host.txt") == "host-file-content\n"
    denied = cluster.kubectl("exec", "full", "-c", "main", "--", "sh", "-c",
                             "echo x > /host/new.txt", check=False)
    assert denied.returncode != 0  # readOnly: true
    _exec(cluster, "full", "main", "echo shared-by-main > /shared/note.txt")
    assert _exec(cluster, "full", "user", "cat /data/note.txt") == "shared-by-main\n"


def test_security_context(cluster):
    assert _exec(cluster, "full", "user", "id -u; id -g").split() == ["1000", "2000"]
    assert _exec(cluster, "full", "main", "id -u").strip() == "0"

    def cap_eff(container: str) -> int:
        line = _exec(cluster, "full", container, "grep CapEff /proc/self/status")
        return int(line.split()[1], 16)
    # privileged gets every capability; the default set is a small subset
    assert cap_eff("priv") > cap_eff("main")
    assert bin(cap_eff("priv")).count("1") >= 38


def test_tty_container(cluster):
    out = cluster.kubectl("exec", "full", "-c", "term", "--", "sh", "-c",
                          "cat /proc/1/fdinfo/0 >/dev/null; ls -l /proc/1/fd/0").stdout
    assert "/dev/pts/" in out  # the container's own process runs on a terminal


def test_host_network_and_host_port(cluster):
    pod = cluster.kubectl_json("get", "pod", "hostnet")
    assert pod["status"]["podIP"] == pod["status"]["hostIP"]
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster.host_port}/", timeout=10) as r:
        assert r.read() == b"via-host-port\n"
