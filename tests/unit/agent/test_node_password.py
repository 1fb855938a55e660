"""Node passwords: a node name belongs to the machine (data dir) that first joined with it;
a second machine is refused with one clear JoinError while the Node exists, the same machine
is always accepted, and deleting the Node frees the name.

Served in-process over plain HTTP: k3py.server.edge.nodeauth with a real registry (SQLite)."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from k3py.agent.join import JoinError, join
from k3py.server.edge.nodeauth import NodeJoin
from k3py.server.edge.nodepassword import (
    NodePasswords,
    check_password,
    hash_password,
    secret_name,
)
from tests.unit.agent.test_join import _ca
from tests.unit.conftest import serve_app

pytestmark = pytest.mark.unit


def test_hash_and_check():
    # The password has letters outside hex, so it can never appear in the hex digest by chance.
    stored = hash_password("pw-xyz")
    assert stored.startswith("scrypt$") and "pw-xyz" not in stored
    assert check_password("pw-xyz", stored)
    assert not check_password("pw-xyy", stored)
    assert not check_password("pw-xyz", "garbage")


@pytest.fixture
async def cluster(env):
    ca_pem, key_pem = _ca()
    token = "K10" + __import__("hashlib").sha256(ca_pem).hexdigest() + "::server:s3cret"
    app = web.Application()
    NodeJoin(ca_cert_pem=ca_pem, ca_key_pem=key_pem, token=token,
             passwords=NodePasswords(env.registry)).install(app)
    runner, port = await serve_app(app)
    async with aiohttp.ClientSession() as session:
        yield env, f"http://127.0.0.1:{port}", token, session
    await runner.cleanup()


async def _fresh_join(session, url, token, name, agent_dir):
    """A join that really asks the server (no cached certificate), as a first start does."""
    for f in ("client-node.crt", "client-node.key"):
        (agent_dir / f).unlink(missing_ok=True)
    return await join(session, url, token, name, str(agent_dir))


async def test_duplicate_node_name_is_refused_until_the_node_is_deleted(cluster, tmp_path):
    env, url, token, session = cluster
    a, b = tmp_path / "a" / "agent", tmp_path / "b" / "agent"
    await join(session, url, token, "pi-1", str(a))
    assert (a / "node-password").stat().st_mode & 0o077 == 0
    secret = await env.registry.get(env.res("secrets"), "kube-system", secret_name("pi-1"))
    assert secret["type"] == "k3py.io/node-password"
    nodes = env.res("nodes")
    await env.registry.create(nodes, None, {"metadata": {"name": "pi-1"}})

    with pytest.raises(JoinError, match=r'node name "pi-1" is already used by another machine'
                                        r".*--node-name.*--with-node-id"):
        await _fresh_join(session, url, token, "pi-1", b)
    assert not (b / "client-node.crt").exists()
    await _fresh_join(session, url, token, "pi-1", a)  # the same machine, restarted
    await _fresh_join(session, url, token, "pi-2", b)  # another name is fine

    await env.registry.delete(nodes, None, "pi-1", {"gracePeriodSeconds": 0})
    await _fresh_join(session, url, token, "pi-1", b)  # the name is free again: b claims it
    await env.registry.create(nodes, None, {"metadata": {"name": "pi-1"}})
    with pytest.raises(JoinError, match="already used by another machine"):
        await _fresh_join(session, url, token, "pi-1", a)


async def test_a_join_without_a_password_is_a_bad_request(cluster):
    _env, url, token, session = cluster
    async with session.post(url + "/v1-k3py/node-cert", json={"nodeName": "pi-9"},
                            headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 400
        assert "nodePassword is required" in (await r.json())["message"]


async def test_owns_checks_the_stored_password(env):
    passwords = NodePasswords(env.registry)
    assert await passwords.owns("pi-7", "anything")  # nothing stored: it claims the name
    assert not await passwords.owns("pi-7", "other")
    await passwords.claim("pi-7", "first")  # no Node object: the name is free
    assert await passwords.owns("pi-7", "first")
    assert await passwords.owns("pi-7", "first")  # cached
    assert not await passwords.owns("pi-7", "second")
    await passwords.claim("pi-7", "second")  # no Node object: the name is free
    assert not await passwords.owns("pi-7", "first")
    assert await passwords.owns("pi-7", "second")


async def test_the_node_owns_its_password_secret(env):
    """An ownerReference to the Node (by uid), so the garbage collector deletes the Secret
    with it: added when the Node registers after the join, set at once when it exists."""
    passwords, nodes, secrets = NodePasswords(env.registry), env.res("nodes"), env.res("secrets")
    await passwords.claim("pi-8", "pw")
    await passwords.adopt("pi-8")  # no Node yet: nothing to own it
    secret = await env.registry.get(secrets, "kube-system", secret_name("pi-8"))
    assert not secret["metadata"].get("ownerReferences")
    node = await env.registry.create(nodes, None, {"metadata": {"name": "pi-8"}})
    await passwords.adopt("pi-8")
    await passwords.adopt("pi-8")  # idempotent
    secret = await env.registry.get(secrets, "kube-system", secret_name("pi-8"))
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "pi-8", "uid": node["metadata"]["uid"]}]
    # a new machine after the Node was deleted: a new Secret (new uid), owned by the new Node
    await env.registry.delete(nodes, None, "pi-8", {"gracePeriodSeconds": 0})
    await passwords.claim("pi-8", "other")
    fresh = await env.registry.get(secrets, "kube-system", secret_name("pi-8"))
    assert fresh["metadata"]["uid"] != secret["metadata"]["uid"]
    assert not fresh["metadata"].get("ownerReferences")
    node = await env.registry.create(nodes, None, {"metadata": {"name": "pi-8"}})
    await env.registry.delete(secrets, "kube-system", secret_name("pi-8"))
    await passwords.claim("pi-8", "other")  # the Node exists: owned from the start
    fresh = await env.registry.get(secrets, "kube-system", secret_name("pi-8"))
    assert fresh["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]


async def test_a_restarted_server_checks_the_verifier_not_scrypt(env, monkeypatch):
    """The Secret keeps an HMAC of the password under the servers' key: a server that
    restarted (a new NodePasswords, nothing cached) accepts the right password without a
    scrypt; a wrong one, or a key since changed (an upgrade from the token-derived key),
    goes to scrypt, which decides."""
    from k3py.server.edge import nodepassword
    key = nodepassword.verifier_key(b"s3cret")
    await NodePasswords(env.registry, key).claim("pi-5", "pw-5")
    secret = await env.registry.get(env.res("secrets"), "kube-system", secret_name("pi-5"))
    assert set(secret["data"]) == {"hash", "verifier"}
    assert b"pw-5" not in __import__("base64").b64decode(secret["data"]["verifier"])
    scrypts = []
    real = nodepassword.check_password
    monkeypatch.setattr(nodepassword, "check_password",
                        lambda pw, stored: scrypts.append(pw) or real(pw, stored))
    restarted = NodePasswords(env.registry, key)
    assert await restarted.owns("pi-5", "pw-5") and scrypts == []
    assert not await restarted.owns("pi-5", "pw-6") and scrypts == ["pw-6"]
    rotated = NodePasswords(env.registry, nodepassword.verifier_key(b"n3w"))
    assert await rotated.owns("pi-5", "pw-5") and scrypts == ["pw-6", "pw-5"]
    # scrypt said yes: the Secret now has the new key's verifier (as one from before
    # verifiers gets one), so the next restart checks an HMAC again
    assert await NodePasswords(env.registry, nodepassword.verifier_key(b"n3w")).owns(
        "pi-5", "pw-5") and scrypts == ["pw-6", "pw-5"]
    await NodePasswords(env.registry).claim("pi-4", "pw-4")  # no key: no verifier
    assert await restarted.owns("pi-4", "pw-4") and scrypts[-1] == "pw-4"
    assert await NodePasswords(env.registry, key).owns("pi-4", "pw-4") and len(scrypts) == 3


async def test_a_failed_verifier_write_does_not_fail_the_dial(env, monkeypatch, caplog):
    """The verifier is optional: if writing it fails for any reason (here the datastore
    raises), the password was still right, so the node is accepted and the failure logged."""
    from k3py.server.edge import nodepassword
    await NodePasswords(env.registry).claim("pi-3", "pw-3")  # (no key: no verifier yet)

    async def broken(*_args, **_kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(env.registry, "update_with", broken)
    passwords = NodePasswords(env.registry, nodepassword.verifier_key(b"s3cret"))
    assert await passwords.owns("pi-3", "pw-3")
    assert "could not store its password verifier: disk full" in caplog.text
