"""The agent's pod translation with a real MetaManager (SQLite in tmp) and real files:
projected volumes (all four sources, items, modes), downwardAPI volumes, resourceFieldRef,
the KUBERNETES_SERVICE_* env, container resources, and token files rewritten in place when
fresh tokens arrive."""

from __future__ import annotations

import base64
import os

import pytest

from k3py.agent.metamanager import MetaManager
from k3py.agent.pods import podspec
from k3py.agent.pods.podspec import PodSpecs
from k3py.tunnel.message import OP_INSERT, new_message, resource_key

pytestmark = pytest.mark.unit


async def _put(meta: MetaManager, kind: str, obj: dict) -> None:
    md = obj["metadata"]
    key = resource_key(kind, md.get("namespace"), md["name"])
    await meta.apply(new_message(source="cloudhub", group="resource", operation=OP_INSERT,
                                 resource=key, content=obj, key=key))


def _pod(**spec) -> dict:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "uid-1",
                         "labels": {"b": "2", "a": 'q"x'}},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {
                "limits": {"cpu": "1500m", "memory": "128Mi"},
                "requests": {"cpu": "250m"}}}], **spec}}


def test_resource_values():
    c = {"resources": {"limits": {"cpu": "1500m", "memory": "128Mi"},
                       "requests": {"cpu": "250m"}}}
    assert podspec.resource_value(c, "limits.cpu") == "2"
    assert podspec.resource_value(c, "limits.cpu", "1m") == "1500"
    assert podspec.resource_value(c, "requests.cpu", "1m") == "250"
    assert podspec.resource_value(c, "limits.memory", "1Mi") == "128"
    assert podspec.resource_value(c, "requests.memory") == "0"
    assert int(podspec.resource_value({}, "limits.cpu")) == os.cpu_count()
    with pytest.raises(ValueError):
        podspec.resource_value(c, "cpu")


def test_api_endpoint():
    assert podspec.api_endpoint("https://127.0.0.1:6443", "10.0.0.5", False) == \
        ("10.0.0.5", 6443)
    assert podspec.api_endpoint("https://127.0.0.1:6443", "10.0.0.5", True) == \
        ("127.0.0.1", 6443)
    assert podspec.api_endpoint("https://srv.example:7443", "10.0.0.5", False) == \
        ("srv.example", 7443)


async def test_env_and_resources(meta):
    specs = PodSpecs(meta, server_url="https://127.0.0.1:6444", host_ip="10.1.2.3")
    pod = _pod()
    pod["spec"]["containers"][0]["env"] = [
        {"name": "KUBERNETES_SERVICE_PORT", "value": "override"},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                           "divisor": "1Mi"}}},
        {"name": "OTHER", "valueFrom": {"resourceFieldRef": {
            "containerName": "c", "resource": "requests.cpu", "divisor": "1m"}}}]
    (spec,) = specs.container_specs(pod, {})
    env = dict(spec["env"])
    assert env["KUBERNETES_SERVICE_HOST"] == "10.1.2.3"
    assert env["KUBERNETES_SERVICE_PORT"] == "override"
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "6444"
    assert env["KUBERNETES_PORT"] == env["KUBERNETES_PORT_443_TCP"] == "tcp://10.1.2.3:6444"
    assert env["KUBERNETES_PORT_443_TCP_PROTO"] == "tcp"
    assert env["MEM"] == "128" and env["OTHER"] == "250"
    assert spec["resources"] == {"cpus": 1.5, "memory": 128 * 2**20}
    pod["spec"]["containers"][0].pop("resources")
    assert podspec.container_specs(pod, meta, {}, "")[0]["resources"] == \
        {"cpus": None, "memory": None}


async def test_projected_and_downward_volumes(meta, tmp_path):
    await _put(meta, "configmaps", {"metadata": {"name": "cm", "namespace": "ns"},
                                    "data": {"a": "A", "b": "B"}})
    await _put(meta, "secrets", {"metadata": {"name": "s", "namespace": "ns"},
                                 "data": {"k": base64.b64encode(b"secret").decode()}})
    await _put(meta, "podtokens", {"metadata": {"name": "p", "namespace": "ns", "uid": "uid-1"},
                                   "tokens": {"proj/token": {"token": "T1"}}})
    pod = _pod(volumes=[
        {"name": "proj", "projected": {"defaultMode": 0o640, "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"configMap": {"name": "cm", "items": [{"key": "a", "path": "sub/a.txt",
                                                    "mode": 0o600}]}},
            {"secret": {"name": "s"}},
            {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {
                "fieldPath": "metadata.namespace"}}]}}]}},
        {"name": "info", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "cpu", "resourceFieldRef": {"containerName": "c",
                                                 "resource": "limits.cpu",
                                                 "divisor": "1m"}}]}},
        {"name": "whole", "configMap": {"name": "cm"}}])
    root = tmp_path / "agent" / "pods" / "uid-1" / "volumes"
    dirs = podspec.prepare_volumes(pod, meta, str(root))
    proj = root / "proj"
    assert dirs["proj"] == str(proj)
    assert (proj / "token").read_text() == "T1"
    assert (proj / "token").stat().st_mode & 0o777 == 0o640
    assert (proj / "sub" / "a.txt").read_text() == "A"
    assert (proj / "sub" / "a.txt").stat().st_mode & 0o777 == 0o600
    assert not (proj / "b").exists()
    assert (proj / "k").read_text() == "secret"
    assert (proj / "ns").read_text() == "ns"
    assert (root / "info" / "labels").read_text() == 'a="q\\"x"\nb="2"'
    assert (root / "info" / "cpu").read_text() == "1500"
    assert sorted(os.listdir(root / "whole")) == ["a", "b"]

    # a fresh token replaces the file (a new inode: renamed into place), others untouched
    await _put(meta, "pods", pod)
    PodSpecs(meta, server_url="https://127.0.0.1:6443").watch_tokens()
    before = (proj / "token").stat().st_ino
    await _put(meta, "podtokens", {"metadata": {"name": "p", "namespace": "ns", "uid": "uid-1"},
                                   "tokens": {"proj/token": {"token": "T2"}}})
    assert (proj / "token").read_text() == "T2"
    assert (proj / "token").stat().st_ino != before
    assert [f for f in os.listdir(proj) if f.startswith(".tmp")] == []
    assert podspec.refresh_tokens(meta) == 0  # nothing new

    # tokens of another pod with the same name are not used
    await _put(meta, "podtokens", {"metadata": {"name": "p", "namespace": "ns", "uid": "old"},
                                   "tokens": {"proj/token": {"token": "T3"}}})
    assert (proj / "token").read_text() == "T2"


async def test_two_agents_in_one_process_keep_their_own_server(tmp_path):
    """The API address pods get is the joining agent's own, also with another agent (and
    its own meta cache) in the same process."""
    metas = [MetaManager(str(tmp_path / n / "meta.db")) for n in ("a", "b")]
    for m in metas:
        await m.open()
    try:
        a = PodSpecs(metas[0], server_url="https://10.0.0.1:6443", host_ip="10.0.0.7")
        b = PodSpecs(metas[1], server_url="https://10.0.0.2:7443", host_ip="10.0.0.8")
        env_a = dict(a.container_specs(_pod(), {})[0]["env"])
        env_b = dict(b.container_specs(_pod(), {})[0]["env"])
        assert (env_a["KUBERNETES_SERVICE_HOST"], env_a["KUBERNETES_SERVICE_PORT"]) == \
            ("10.0.0.1", "6443")
        assert (env_b["KUBERNETES_SERVICE_HOST"], env_b["KUBERNETES_SERVICE_PORT"]) == \
            ("10.0.0.2", "7443")
        a.watch_tokens()
        a.watch_tokens()
        assert len(metas[0].listeners) == 1 and metas[1].listeners == []
        a.unwatch_tokens()
        assert metas[0].listeners == []
    finally:
        for m in metas:
            await m.close()
