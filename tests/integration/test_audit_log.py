"""The audit log of a real server, written while kubectl and an HTTP client use it: upstream's
audit.k8s.io/v1 Event lines, Metadata level by default (no secret value in the log), a Policy
file choosing levels per resource (RequestResponse carries the bodies, None drops the
request), health checks never logged, size rotation, and a bad policy refused at start."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from bench.api import client_ssl
from tests.harness import ServerProcess, clean_env, free_port

pytestmark = pytest.mark.integration

POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  nonResourceURLs: ["/api*", "/version", "/openapi*"]
- level: Metadata
  resources: [{group: "", resources: [secrets]}]
- level: RequestResponse
  resources: [{group: "", resources: [configmaps]}]
- level: None
"""


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_default_metadata_level(tmp_path: Path):
    log = tmp_path / "audit" / "audit.log"
    srv = ServerProcess(tmp_path / "srv", extra_args=["--audit-log-path", str(log)]).start()
    try:
        srv.kubectl("create", "secret", "generic", "db", "--from-literal=password=hunter2")
        srv.kubectl("get", "secret", "db")
        srv.kubectl("get", "--raw", "/healthz")
        srv.kubectl("get", "--raw", "/v1-k3py/encrypt/status")  # a route that authenticates itself
    finally:
        srv.stop()
    evs = events(log)
    own = [e["user"]["username"] for e in evs if e["requestURI"] == "/v1-k3py/encrypt/status"]
    assert own == ["system:admin"], own
    create = [e for e in evs if e["verb"] == "create" and
              e.get("objectRef", {}).get("resource") == "secrets"]
    assert len(create) == 1, evs[-5:]
    e = create[0]
    assert e["kind"] == "Event" and e["apiVersion"] == "audit.k8s.io/v1"
    assert e["level"] == "Metadata" and e["stage"] == "ResponseComplete"
    assert e["user"]["username"] == "system:admin" and "system:masters" in e["user"]["groups"]
    assert e["objectRef"] == {"resource": "secrets", "namespace": "default",
                              "apiVersion": "v1"}
    assert e["responseStatus"]["code"] == 201 and e["auditID"]
    assert any(x["verb"] == "get" and x.get("objectRef", {}).get("name") == "db" for x in evs)
    assert "hunter2" not in log.read_text() and "aHVudGVyMg" not in log.read_text()
    assert not any(x["requestURI"] == "/healthz" for x in evs)
    assert not any(x["stage"] == "RequestReceived" for x in evs)


def test_policy_levels_and_rotation(tmp_path: Path):
    log = tmp_path / "audit.log"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    srv = ServerProcess(tmp_path / "srv", extra_args=[
        "--audit-log-path", str(log), "--audit-policy-file", str(policy),
        "--audit-log-maxsize", "1", "--audit-log-maxbackup", "2"]).start()
    try:
        srv.kubectl("create", "configmap", "cfg", "--from-literal=k=visible-value")
        srv.kubectl("create", "secret", "generic", "db", "--from-literal=password=hunter2")
        srv.kubectl("get", "pods")  # level None: not logged
        evs = events(log)
        cm = [e for e in evs if e.get("objectRef", {}).get("resource") == "configmaps"
              and e["verb"] == "create"][0]
        assert cm["level"] == "RequestResponse"
        assert cm["requestObject"]["data"] == {"k": "visible-value"}
        assert cm["responseObject"]["metadata"]["name"] == "cfg"
        sec = [e for e in evs if e.get("objectRef", {}).get("resource") == "secrets"][0]
        assert sec["level"] == "Metadata" and "requestObject" not in sec
        assert not any(e.get("objectRef", {}).get("resource") == "pods" for e in evs)
        assert not any(e["requestURI"].startswith("/api") and "objectRef" not in e
                       for e in evs)

        async def many_gets() -> None:  # ~1.5 MB of RequestResponse lines: one rotation
            ctx = client_ssl(srv.kubeconfig, tmp_path)
            url = f"{srv.url}/api/v1/namespaces/default/configmaps/cfg"
            async with aiohttp.ClientSession() as s:
                for _ in range(1500):
                    async with s.get(url, ssl=ctx) as r:
                        assert r.status == 200
                        await r.read()
        asyncio.run(many_gets())
    finally:
        srv.stop()
    rotated = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("audit.log"))
    assert rotated[:2] == ["audit.log", "audit.log.1"], rotated
    assert log.stat().st_size <= 1024 * 1024


def test_bad_policy_is_one_line_at_start(tmp_path: Path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("kind: Policy\napiVersion: audit.k8s.io/v1\nrules:\n- level: Loud\n")
    out = subprocess.run([sys.executable, "-m", "k3py", "server", "--data-dir",
                          str(tmp_path / "d"), "--disable-agent", "--https-listen-port",
                          str(free_port()), "--bind-address", "127.0.0.1",
                          "--audit-log-path", str(tmp_path / "a.log"),
                          "--audit-policy-file", str(policy)],
                         capture_output=True, text=True, timeout=60, env=clean_env())
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("k3py: error: ")
    assert "rules[0].level must be one of" in out.stderr
