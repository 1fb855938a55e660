"""The stream relay between servers (k3py/server/edge/peerrelay.py), without a network: what of
the client's request a peer gets (never the client's credentials or impersonation), how a
peer's answer head is read, who counts as a peer, and what anyone else gets from the
servers-only endpoints."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from aiohttp.test_utils import make_mocked_request

from k3py.api import errors
from k3py.server.apiserver.auth import Authenticator, User
from k3py.server.edge.peerrelay import PEER_GROUPS, PEER_USER, PeerRelay, _read_head

pytestmark = pytest.mark.unit


def test_the_peer_gets_the_upgrade_but_not_the_clients_credentials():
    request = make_mocked_request("POST", "/api/v1/namespaces/default/pods/p/exec?command=sh",
                                  headers={"Authorization": "Bearer secret",
                                           "Cookie": "k3py-session=x",
                                           "Impersonate-User": "alice",
                                           "Impersonate-Group": "system:masters",
                                           "Host": "a:6443", "Connection": "Upgrade",
                                           "Upgrade": "SPDY/3.1",
                                           "X-Stream-Protocol-Version": "v4.channel.k8s.io"})
    sent = dict(PeerRelay._headers(request))
    assert sent == {"Connection": "Upgrade", "Upgrade": "SPDY/3.1",
                    "X-Stream-Protocol-Version": "v4.channel.k8s.io"}


def _head(raw: bytes):
    async def read():
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await _read_head(reader)
    return asyncio.run(read())


def test_a_peers_answer_head_is_read_up_to_its_blank_line():
    status, headers = _head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                            b"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n\x82\x01")
    assert status == 101 and headers["Sec-WebSocket-Protocol"] == "v5.channel.k8s.io"
    with pytest.raises(OSError, match="the peer answered"):
        _head(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_only_the_servers_certificate_identity_is_a_peer():
    assert PeerRelay.is_peer(User(PEER_USER, PEER_GROUPS))
    assert not PeerRelay.is_peer(User("system:admin", ("system:masters",)))


def test_a_servers_only_endpoint_admits_a_peer_and_says_what_others_cannot_do():
    authenticator = Authenticator()
    authenticator.add_token("peer", User(PEER_USER, PEER_GROUPS))
    authenticator.add_token("admin", User("system:admin", ("system:masters",)))
    relay = PeerRelay(None, None, "10.0.0.2", 6443,  # type: ignore[arg-type] - no call made
                      authenticator)

    def require(token: str) -> User:
        request = make_mocked_request("GET", "/v1-k3py/peer-mqtttail",
                                      headers={"Authorization": f"Bearer {token}"})
        return contextvars.Context().run(relay.require_peer, request, "follow a tail")
    assert require("peer").name == PEER_USER
    with pytest.raises(errors.StatusError) as e:
        require("admin")
    assert e.value.code == 403 and e.value.message == (
        'User "system:admin" cannot follow a tail: only the cluster\'s servers do')
    with pytest.raises(errors.StatusError) as e:
        require("wrong")
    assert e.value.code == 401
