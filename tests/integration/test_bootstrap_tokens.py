"""Bootstrap tokens with the real CLI against a real server: `k3py token create` prints a
K10 token an agent joins with (the real k3py.agent.join); `k3py token list` shows it with its
TTL and description; an expired token and a deleted one are refused (and the token cleaner
deletes the expired one's Secret), the server's own token keeps working. As bearer tokens on
the API (real kubectl, as upstream's --enable-bootstrap-token-auth): a valid token is
system:bootstrap:<id> in system:bootstrappers and its auth-extra-groups; an expired one, a
wrong secret, one without usage-bootstrap-authentication, a bad extra group and a deleted one
are 401, and the join token is good only for joining. Legacy service-account token Secrets:
the tokens controller fills them, their token is the account (allowed once bound) and is 401
once the Secret or the account is deleted (the account's token Secrets go with it)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from k3py.agent.join import JoinError, join
from tests.harness import KUBECTL, ServerProcess, clean_env, wait_for

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


def bearer_kubectl(srv: ServerProcess, token: str, *args: str) -> subprocess.CompletedProcess:
    """kubectl with only `token` as its credential (no kubeconfig user)."""
    ca = srv.data_dir / "server" / "tls" / "server-ca.crt"
    return subprocess.run([KUBECTL, "--kubeconfig", "/dev/null", "--server", srv.url,
                           "--certificate-authority", str(ca), "--token", token, *args],
                          capture_output=True, text=True, timeout=60)


def whoami(srv: ServerProcess, token: str) -> dict | str:
    """The SelfSubjectReview's userInfo for `token`, or kubectl's error."""
    out = bearer_kubectl(srv, token, "auth", "whoami", "-o", "json")
    return json.loads(out.stdout)["status"]["userInfo"] if out.returncode == 0 else out.stderr


def bootstrap_secret(token_id: str, secret: str, **data: str) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"},
        "stringData": {"token-id": token_id, "token-secret": secret, **data}})


def test_bootstrap_tokens_as_bearer_tokens(srv):
    token = token_cli(srv, "create", "abc123.0123456789abcdef", "--ttl", "1h").stdout.strip()
    token_id = "abc123"
    assert token.endswith("::abc123.0123456789abcdef"), token
    user = wait_for(lambda: isinstance(u := whoami(srv, "abc123.0123456789abcdef"), dict)
                    and u, 10, 0.2, "the new token authenticating")
    assert user["username"] == f"system:bootstrap:{token_id}", user
    assert user["groups"] == ["system:bootstrappers", "system:authenticated"], user
    denied = bearer_kubectl(srv, "abc123.0123456789abcdef", "get", "pods", "-A")
    assert 'User "system:bootstrap:abc123" cannot list resource "pods"' in denied.stderr, \
        denied.stderr

    usage = {"usage-bootstrap-authentication": "true"}
    srv.kubectl("apply", "-f", "-", input=bootstrap_secret(
        "extra1", "0123456789abcdef", **usage,
        **{"auth-extra-groups": "system:bootstrappers:edge, system:bootstrappers:edge"}))
    srv.kubectl("apply", "-f", "-", input=bootstrap_secret(
        "exp001", "0123456789abcdef", **usage, expiration="2020-01-01T00:00:00Z"))
    srv.kubectl("apply", "-f", "-", input=bootstrap_secret(
        "nouse1", "0123456789abcdef", **{"usage-bootstrap-signing": "true"}))
    srv.kubectl("apply", "-f", "-", input=bootstrap_secret(
        "badgrp", "0123456789abcdef", **usage, **{"auth-extra-groups": "system:masters"}))
    extra = wait_for(lambda: isinstance(u := whoami(srv, "extra1.0123456789abcdef"), dict)
                     and u, 10, 0.2, "the token with extra groups authenticating")
    assert extra["groups"] == ["system:bootstrappers", "system:bootstrappers:edge",
                               "system:authenticated"], extra
    for refused in ("exp001.0123456789abcdef", "abc123.0123456789abcdee",
                    "nouse1.0123456789abcdef", "badgrp.0123456789abcdef",
                    "zzz999.0123456789abcdef", srv.join_token(),
                    srv.join_token().rpartition(":")[2]):
        assert "Unauthorized" in whoami(srv, refused), refused

    assert token_cli(srv, "delete", token_id).returncode == 0
    # the authenticator reads the Secret from the server's cache, as upstream's lister
    wait_for(lambda: "Unauthorized" in whoami(srv, "abc123.0123456789abcdef"), 10, 0.1,
             "the deleted token refused")


def legacy_token(srv: ServerProcess, account: str, secret: str) -> str:
    """Makes a kubernetes.io/service-account-token Secret for `account` and returns the token
    the tokens controller fills it with."""
    srv.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
        "metadata": {"name": secret, "namespace": "default",
                     "annotations": {"kubernetes.io/service-account.name": account}}}))

    def filled() -> str:
        out = srv.kubectl("get", "secret", secret, "-o", "jsonpath={.data.token}", check=False)
        return base64.b64decode(out.stdout).decode() if out.returncode == 0 else ""
    return wait_for(filled, 10, 0.1, f"the token Secret {secret} filled")


def test_legacy_service_account_token_secrets(srv):
    srv.kubectl("create", "serviceaccount", "robot")
    srv.kubectl("create", "serviceaccount", "leaver")
    token = legacy_token(srv, "robot", "robot-token")
    leaver_token = legacy_token(srv, "leaver", "leaver-token")
    user = whoami(srv, token)
    assert isinstance(user, dict), user
    assert user["username"] == "system:serviceaccount:default:robot", user
    assert user["groups"] == ["system:serviceaccounts", "system:serviceaccounts:default",
                              "system:authenticated"], user
    denied = bearer_kubectl(srv, token, "get", "configmaps")
    assert 'cannot list resource "configmaps"' in denied.stderr, denied.stderr
    srv.kubectl("create", "rolebinding", "robot-view", "--clusterrole", "view",
                "--serviceaccount", "default:robot")
    wait_for(lambda: bearer_kubectl(srv, token, "get", "configmaps").returncode == 0, 10, 0.1,
             "the bound service account allowed to list configmaps")

    srv.kubectl("delete", "secret", "robot-token")
    wait_for(lambda: "Unauthorized" in whoami(srv, token), 10, 0.1,
             "the token of a deleted Secret refused")
    assert isinstance(whoami(srv, leaver_token), dict)
    srv.kubectl("delete", "serviceaccount", "leaver")
    wait_for(lambda: "Unauthorized" in whoami(srv, leaver_token), 10, 0.1,
             "the token of a deleted ServiceAccount refused")
    wait_for(lambda: srv.kubectl("get", "secret", "leaver-token", check=False).returncode != 0,
             10, 0.1, "the deleted ServiceAccount's token Secret deleted")
