"""Bootstrap tokens with the real CLI against a real server: `k3py token create` prints a
K10 token an agent joins with (the real k3py.agent.join); `k3py token list` shows it with its
TTL and description; an expired token and a deleted one are refused (and the token cleaner
deletes the expired one's Secret), the server's own token keeps working."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from k3py.agent.join import JoinError, join
from tests.harness import ServerProcess, clean_env, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("tokens") / "srv")
    try:
        yield server.start()
    finally:
        server.stop()


def token_cli(srv: ServerProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "k3py", "token", *args, "--data-dir",
                           str(srv.data_dir), "--server", srv.url], capture_output=True,
                          text=True, timeout=60, env=clean_env())


def joins(srv: ServerProcess, token: str, agent_dir: Path, node: str) -> str:
    """"" when `node` joined with `token`, else the agent's error."""
    async def run() -> str:
        async with aiohttp.ClientSession() as session:
            try:
                await join(session, srv.url, token, node, str(agent_dir))
            except JoinError as e:
                return str(e)
        return ""
    return asyncio.run(run())


def test_create_list_join_and_delete(srv, tmp_path):
    out = token_cli(srv, "create", "--ttl", "2h", "--description", "pi rack 3")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("K10") and "::" in token, token
    token_id = token.rpartition("::")[2].partition(".")[0]
    listed = token_cli(srv, "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(token_id))
    assert "authentication,signing" in row and "pi rack 3" in row
    assert " 119m " in row or " 120m " in row or " 2h" in row, row
    assert joins(srv, token, tmp_path / "a", "pi-a") == ""

    out = token_cli(srv, "delete", token_id)
    assert out.returncode == 0, out.stderr
    assert "401" in joins(srv, token, tmp_path / "b", "pi-b")
    assert token_id not in token_cli(srv, "list").stdout


def test_expired_and_wrong_tokens_are_refused(srv, tmp_path):
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
              "metadata": {"name": "bootstrap-token-old000", "namespace": "kube-system"},
              "stringData": {"token-id": "old000", "token-secret": "0123456789abcdef",
                             "expiration": "2020-01-01T00:00:00Z",
                             "usage-bootstrap-authentication": "true"}}
    srv.kubectl("apply", "-f", "-", input=json.dumps(secret))
    assert "401" in joins(srv, "old000.0123456789abcdef", tmp_path / "c", "pi-c")
    assert "401" in joins(srv, "old000.ffffffffffffffff", tmp_path / "d", "pi-d")
    # the token cleaner deletes the expired Secret, as upstream's
    wait_for(lambda: srv.kubectl("get", "secret", "-n", "kube-system", "bootstrap-token-old000",
                                 check=False).returncode != 0, 30, 0.2,
             what="the expired token's Secret deleted")
    assert joins(srv, srv.join_token(), tmp_path / "e", "pi-e") == ""
    bad = token_cli(srv, "create", "not-a-token")
    assert bad.returncode != 0 and "[a-z0-9]{6}.[a-z0-9]{16}" in bad.stderr, bad.stderr
