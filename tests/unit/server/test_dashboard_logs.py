"""The dashboard's "logs" feed without a network: the tab's message checked and bounded
(namespace, pods up to MAX_PODS, flags, tailLines), the pods/log query each pod gets (its
first container unless one is named, timestamps always, previous rather than follow), the
batch's lines split per pod across chunks, a line too long cut once, the oldest lines dropped
and counted beyond the budget, each pod's end with its error (also an unexpected one: the
feed still ends); the pods/log query asked of a peer says again what the node is asked
(podlogs.log_query of log_request); and the streamed GETs to the peers are bounded (429) and
given back, for the whole server and for each user."""

from __future__ import annotations

import contextlib

import pytest

from k3py.api import errors
from k3py.server.apiserver.auth import Authenticator, AuthorizerChain, User
from k3py.server.bootstrap import authorizer_chain
from k3py.server.dashboard.logs import (
    MAX_PEER_LOGS_PER_USER,
    MAX_PODS,
    MAX_TAIL_LINES,
    LogBatch,
    LogsFeed,
    LogsQuery,
)
from k3py.server.edge.cloudhub import CloudHub
from k3py.server.edge.peerrelay import MAX_STREAMED_GETS, PeerRelay
from k3py.server.edge.podlogs import log_query, log_request

pytestmark = pytest.mark.unit

ADMIN = User("system:admin", ("system:masters",))


def _pod(*containers: str, waiting: str = "") -> dict:
    pod = {"metadata": {"namespace": "default", "name": "web-1", "uid": "u1"},
           "spec": {"containers": [{"name": c} for c in containers]}}
    if waiting:
        pod["status"] = {"containerStatuses": [
            {"name": containers[0], "state": {"waiting": {"reason": waiting}}}]}
    return pod


def _msg(**fields) -> dict:
    return {"op": "logs", "id": "1", "namespace": "default", "pods": ["a", "b"], **fields}


def test_a_query_names_its_pods_and_is_bounded():
    q = LogsQuery.parse(_msg(follow=True, tailLines=100))
    assert q.pods == ("a", "b") and q.follow and not q.previous and q.tail_lines == 100
    assert LogsQuery.parse(_msg(pods=[f"p{i}" for i in range(MAX_PODS)])).pods[-1] == \
        f"p{MAX_PODS - 1}"
    bad = [_msg(namespace=""), _msg(pods=[]), _msg(pods="a"), _msg(pods=["a", 3]),
           _msg(pods=["a", "a"]), _msg(pods=[f"p{i}" for i in range(MAX_PODS + 1)]),
           _msg(pods=["x" * 254]), _msg(follow="yes"), _msg(tailLines=-1),
           _msg(tailLines=MAX_TAIL_LINES + 1), _msg(tailLines=True), _msg(tailLines="5"),
           _msg(container=7)]
    for msg in bad:
        with pytest.raises(errors.StatusError) as e:
            LogsQuery.parse(msg)
        assert e.value.code == 400, msg
    with pytest.raises(errors.StatusError, match=f"at most {MAX_PODS}"):
        LogsQuery.parse(_msg(pods=[f"p{i}" for i in range(MAX_PODS + 1)]))


def test_each_pod_is_asked_its_first_container_with_timestamps():
    pod = _pod("app", "sidecar")
    assert LogsQuery.parse(_msg(follow=True, tailLines=5)).pod_query(pod) == {
        "container": "app", "timestamps": "true", "follow": "true", "tailLines": "5"}
    assert LogsQuery.parse(_msg(container="sidecar", follow=True, previous=True)
                           ).pod_query(pod) == {"container": "sidecar", "timestamps": "true",
                                                "previous": "true"}


def test_the_log_request_checks_the_container_as_the_kubelet_does():
    with pytest.raises(errors.StatusError, match="choose one of: \\[app sidecar\\]"):
        log_request(_pod("app", "sidecar"), {})
    with pytest.raises(errors.StatusError, match="waiting to start: image can't be pulled"):
        log_request(_pod("app", waiting="ErrImagePull"), {})
    params = log_request(_pod("app", waiting="ErrImagePull"), {"previous": "true"})
    assert params.previous and params.container == "app"
    params = log_request(_pod("app"), {"follow": "true", "timestamps": "true",
                                       "tailLines": "10"})
    assert (params.namespace, params.pod, params.uid, params.follow) == \
        ("default", "web-1", "u1", True)
    # a peer is asked the same again
    assert log_request(_pod("app"), log_query(params)) == params


def test_a_batch_holds_each_pods_lines_in_order():
    batch = LogBatch(2)
    batch.add(0, b"2026-01-01T00:00:00Z one\n2026-01-01T00:00:01Z tw")
    batch.add(1, b"T b1\r\n")
    batch.add(0, b"o\n")
    assert batch.ready.is_set()
    assert batch.take() == {"lines": [[0, "2026-01-01T00:00:00Z one"], [1, "T b1"],
                                      [0, "2026-01-01T00:00:01Z two"]]}
    assert not batch.ready.is_set() and not batch.done
    batch.add(0, "T é, no newline".encode())
    batch.end(0)
    batch.end(1, "pod b: gone")
    assert batch.take() == {"lines": [[0, "T é, no newline"]],
                            "ended": [[0, ""], [1, "pod b: gone"]]}
    assert batch.done


def test_a_line_too_long_is_cut_once_and_the_rest_skipped():
    batch = LogBatch(1, max_line=10)
    batch.add(0, b"T 12345678")
    batch.add(0, b"9 more and more")  # past 10 bytes: cut here
    batch.add(0, b" still the same line\nT next\n")
    assert batch.take()["lines"] == [[0, "T 12345678…"], [0, "T next"]]


def test_the_oldest_lines_go_beyond_the_budget_and_are_counted():
    batch = LogBatch(1, budget=10 * (128 + 4))
    batch.add(0, b"".join(b"L%02d\n" % i for i in range(25)))
    taken = batch.take()
    assert [text for _, text in taken["lines"]] == [f"L{i:02d}" for i in range(15, 25)]
    assert taken["dropped"] == 15
    batch.end(0)
    assert batch.take() == {"lines": [], "ended": [[0, ""]]} and batch.done


async def _logs_feed(env, peers) -> LogsFeed:
    """The "logs" feed, with pod web-1 on n1 (no tunnel here)."""
    hub = CloudHub(env.registry, Authenticator(), informers=env.ctx.informers,
                   authorizer=AuthorizerChain())
    await env.registry.create(env.res("pods"), "default", {
        "metadata": {"name": "web-1"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}})
    return LogsFeed(authorizer_chain(env.ctx.informers), hub, 0.0, peers)


async def _batches(feed: LogsFeed, user: User = ADMIN) -> list:
    """The batches a feed of two pods sends to its end: web-1, and a pod that does not exist."""
    return [batch async for batch in feed.feed(user, _msg(pods=["web-1", "gone"]))]


async def _feed_ends(env, peers) -> list:
    return await _batches(await _logs_feed(env, peers))


async def test_each_pod_ends_with_its_error_and_the_peers_streams_are_given_back(env):
    """No server holds n1: web-1 ends with the 503's message, `gone` with its 404's, and the
    relay's count of open streamed GETs is back to 0."""
    peers = PeerRelay(env.registry, None, "10.0.0.2", 6443,  # type: ignore[arg-type] - no
                      Authenticator())                      # peer is live: never connected
    batches = await _feed_ends(env, peers)
    ended = dict(e for b in batches for e in b.get("ended", []))
    assert batches[0] == {"reset": True}
    assert ended == {0: "node n1 is not connected to the server",
                     1: 'pods "gone" not found'}
    assert peers.streamed.held() == 0


async def test_an_unexpected_failure_ends_that_pods_log_and_not_the_feed(env):
    """The peers cannot be listed (their store fails: here it is missing): web-1's log ends
    with an internal error, the other pod's as it would, and the feed ends."""
    peers = PeerRelay(None, None, "10.0.0.2", 6443,  # type: ignore[arg-type] - the store
                      Authenticator())              # fails when the peers are listed
    batches = await _feed_ends(env, peers)
    ended = dict(e for b in batches for e in b.get("ended", []))
    assert ended[0].startswith("internal error: ") and ended[1] == 'pods "gone" not found'
    assert peers.streamed.held() == 0


async def test_streamed_gets_to_the_peers_are_bounded():
    peers = PeerRelay(None, None, "10.0.0.2", 6443,  # type: ignore[arg-type] - refused
                      Authenticator())              # before any peer is listed
    with contextlib.ExitStack() as held:
        for _ in range(MAX_STREAMED_GETS):
            held.enter_context(peers.streamed.hold())
        with pytest.raises(errors.StatusError) as e:
            async with peers.streamed_get("/api/v1/namespaces/default/pods/p/log", "n1"):
                pass
        assert e.value.code == 429 and e.value.message == (
            f"{MAX_STREAMED_GETS} logs are followed through the other servers already: "
            "close another log view first")
        assert peers.streamed.held() == MAX_STREAMED_GETS
    assert len(peers.streamed) == 0


async def test_a_users_logs_through_the_peers_are_bounded_and_others_untouched(env):
    """web-1's log goes through a peer: the 503 of no peer holding n1 while the user follows
    fewer than MAX_PEER_LOGS_PER_USER logs through the peers (in other feeds), the 429's
    message at that many, before any peer is asked; another user's is the 503 still, and
    every count is given back."""
    peers = PeerRelay(env.registry, None, "10.0.0.2", 6443,  # type: ignore[arg-type] - no
                      Authenticator())                      # peer is live: never connected
    feed = await _logs_feed(env, peers)
    other = User("system:admin-2", ("system:masters",))

    async def web_1_ends(user: User) -> str:
        return dict(e for b in await _batches(feed, user) for e in b.get("ended", []))[0]
    with contextlib.ExitStack() as held:
        for _ in range(MAX_PEER_LOGS_PER_USER - 1):
            held.enter_context(feed.peer_logs.hold(ADMIN.name))
        assert await web_1_ends(ADMIN) == "node n1 is not connected to the server"
        held.enter_context(feed.peer_logs.hold(ADMIN.name))
        assert await web_1_ends(ADMIN) == (
            f"at most {MAX_PEER_LOGS_PER_USER} logs per user are followed through the other "
            "servers at once: close another log view (in any tab) first")
        assert await web_1_ends(other) == "node n1 is not connected to the server"
        assert feed.peer_logs.held(ADMIN.name) == MAX_PEER_LOGS_PER_USER
    assert len(feed.peer_logs) == 0 and peers.streamed.held() == 0
    await peers.close()
