"""The nodes' reports shared between servers (k3py/server/edge/peerreports.py), without a
network: a batch's wire form both ways, split to its bounds and refused with what is wrong;
the peers-only route (401 without a credential, 403 for an admin) recording a peer's batch into
a real UsageStore, MqttFigures and PeerTunnels as if from the nodes, the newest winning and
nothing sent on;
and what a server keeps of its own nodes' reports for the peers it meets later."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request

from k3py.api import errors
from k3py.server.apiserver.audit import AuditLog, AuditPolicy
from k3py.server.apiserver.auth import Authenticator
from k3py.server.edge import peerreports
from k3py.server.edge.mqttstats import MqttFigures
from k3py.server.edge.peerrelay import PEER_GROUPS, PEER_USER, PeerRelay
from k3py.server.edge.peerreports import (
    PEER_REPORTS_PATH,
    PeerReports,
    SharedReport,
    decode_batch,
    encode_batches,
)
from k3py.server.edge.peertunnels import TUNNEL_KIND, PeerTunnels, TunnelReport
from k3py.server.metrics.store import UsageStore
from k3py.tunnel.mqtt import MQTT_KIND, MqttSummary, TopicRate
from k3py.tunnel.protocol import METRICS_KIND, PodUsage, Usage, UsageReport

pytestmark = pytest.mark.unit


def _usage(ts: float, cpu: int = 1000) -> UsageReport:
    return UsageReport(ts, 15.0, Usage(cpu, 2 ** 20),
                       (PodUsage("default", "web", "uid-1", {"c": Usage(cpu // 2, 4096)}),))


def _summary(ts: float, rate: float = 1.5) -> MqttSummary:
    return MqttSummary(ts, 10.0, rate, 7, 3, 0, (TopicRate("a/b", rate, 7),))


def _tunnel(connected: bool = True, last_seen: float = 100.0) -> TunnelReport:
    return TunnelReport(connected, 90.0 if connected else None, last_seen, 2, 1.5, 0)


def test_a_batch_crosses_as_it_was_sent():
    sent = [SharedReport(METRICS_KIND, "n1", _usage(10.0)),
            SharedReport(MQTT_KIND, "n1", _summary(10.0)),
            SharedReport(MQTT_KIND, "n2", None),
            SharedReport(TUNNEL_KIND, "n1", _tunnel()),
            SharedReport(TUNNEL_KIND, "n2", TunnelReport(False, None, None, 0, None, 3))]
    bodies = list(encode_batches("10.0.0.1", sent))
    assert len(bodies) == 1
    assert decode_batch(bodies[0]) == ("10.0.0.1", sent)
    assert orjson.loads(bodies[0])["reports"][3] == {  # the tunnel column's own fields
        "kind": "tunnel", "node": "n1", "content": {
            "connected": True, "connectedSince": 90.0, "lastSeen": 100.0, "reconnects": 2,
            "rttMs": 1.5, "queued": 0}}


def test_a_large_share_is_split_and_an_oversized_report_left_out(monkeypatch, caplog):
    monkeypatch.setattr(peerreports, "MAX_ENTRIES", 3)
    sent = [SharedReport(METRICS_KIND, f"n{i}", _usage(10.0)) for i in range(7)]
    bodies = list(encode_batches("a", sent))
    assert [len(decode_batch(b)[1]) for b in bodies] == [3, 3, 1]
    assert [r for b in bodies for r in decode_batch(b)[1]] == sent
    one = len(orjson.dumps(sent[0].to_content()))
    monkeypatch.setattr(peerreports, "MAX_ENTRIES", 100)
    monkeypatch.setattr(peerreports, "MAX_BODY", 1024 + 2 * one + 2)  # two fit in a body
    big = SharedReport(METRICS_KIND, "big", UsageReport(10.0, 15.0, Usage(1, 1), tuple(
        PodUsage("default", f"p{i}", f"u{i}", {"c": Usage(1, 1)}) for i in range(100))))
    bodies = list(encode_batches("a", [*sent[:3], big]))
    assert [[r.node for r in decode_batch(b)[1]] for b in bodies] == [["n0", "n1"], ["n2"]]
    assert "node big: its metrics report" in caplog.text and "too large" in caplog.text


@pytest.mark.parametrize(("body", "says"), [
    (b"{", "not JSON"),
    (b"[]", 'a list of "reports"'),
    (b'{"reports": []}', 'names its "server"'),
])
def test_a_bad_batch_says_what_is_wrong(body, says):
    with pytest.raises(ValueError) as e:
        decode_batch(body)
    assert says in str(e.value)


@pytest.mark.parametrize(("body", "says"), [
    (b'{"server": "a", "reports": [{"kind": "metrics", "node": "n1", "content": {}}]}',
     "reports[0]: a usage report needs a timestamp"),
    (b'{"server": "a", "reports": [{"kind": "metrics", "node": "n1", "content": null}]}',
     "reports[0]: a metrics report needs its content"),
    (b'{"server": "a", "reports": [{"kind": "mqtt", "content": null}]}',
     "reports[0]: a report needs the node's name"),
    (b'{"server": "a", "reports": [{"kind": "tunnel", "node": "n1", "content": null}]}',
     "reports[0]: a tunnel report needs its content"),
    (b'{"server": "a", "reports": [{"kind": "tunnel", "node": "n1", "content": {}}]}',
     'reports[0]: tunnel figures say whether "connected"'),
    (b'{"server": "a", "reports": [{"kind": "tunnel", "node": "n1", "content": '
     b'{"connected": true, "lastSeen": "now", "reconnects": 0, "queued": 0}}]}',
     'reports[0]: "lastSeen" is a number >= 0 and < 2**63, or null'),
    (b'{"server": "a", "reports": [{"kind": "tunnel", "node": "n1", "content": '
     b'{"connected": true, "reconnects": -1, "queued": 0}}]}',
     'reports[0]: "reconnects" is a count'),
    (b'{"server": "a", "reports": [{"kind": "metrics", "node": "n1", "content": {"timestamp": '
     b'1, "window": 15, "node": {"cpu": 1e26, "memory": 1}, "pods": []}}]}',
     "reports[0]: cpu must be a number >= 0 and < 2**63"),
])
def test_a_bad_report_is_left_out_and_logged(body, says, caplog):
    """One report this server cannot read (a peer of another version, a node's absurd
    figure) costs only itself: the batch's other reports are recorded."""
    good = b'{"kind": "mqtt", "node": "n2", "content": null}'
    body = body.replace(b"}]}", b"}, " + good + b"]}") if body.endswith(b"}]}") else body
    caplog.set_level(logging.DEBUG, logger="k3py.edge")
    server, reports = decode_batch(body)
    assert server == "a" and [r.node for r in reports] == ["n2"]
    assert says in caplog.text


def test_too_many_reports_and_unknown_kinds():
    many = {"server": "a", "reports": [{"kind": MQTT_KIND, "node": "n", "content": None}] *
            (peerreports.MAX_ENTRIES + 1)}
    with pytest.raises(ValueError, match=f"at most {peerreports.MAX_ENTRIES} reports"):
        decode_batch(orjson.dumps(many))
    newer = {"server": "a", "reports": [{"kind": "gpu", "node": "n", "content": {"x": 1}}]}
    assert decode_batch(orjson.dumps(newer)) == ("a", [])  # a newer peer may share more kinds


class _Transport:
    """What aiohttp's TLS transport says of the client's certificate."""

    def __init__(self, user: str = "", groups: tuple[str, ...] = ()) -> None:
        self.subject = ((("commonName", user),), *((("organizationName", g),) for g in groups))

    def get_extra_info(self, name: str, default=None):
        return {"subject": self.subject} if name == "peercert" and self.subject[0][0][1] \
            else default


class _Protocol:
    """What aiohttp's StreamReader asks of the connection it reads (flow control)."""

    def pause_reading(self, **_kw) -> None: ...

    def resume_reading(self, **_kw) -> None: ...


def _request(body: bytes, transport: _Transport) -> web.Request:
    """A POST of `body` to PEER_REPORTS_PATH (in a running loop)."""
    payload = StreamReader(_Protocol(), 2 ** 16, loop=asyncio.get_running_loop())
    payload.feed_data(body)
    payload.feed_eof()
    return make_mocked_request("POST", PEER_REPORTS_PATH, payload=payload, transport=transport,
                               headers={"Content-Length": str(len(body))})


def _post(reports: PeerReports, body: bytes, transport: _Transport) -> web.Response:
    async def send() -> web.Response:
        return await reports.receive(_request(body, transport))
    return asyncio.run(send())


def _reports() -> PeerReports:
    relay = PeerRelay(None, None, "10.0.0.2", 6443,  # type: ignore[arg-type] - no call made
                      Authenticator())
    return PeerReports(relay, UsageStore(clock=lambda: 20.0), MqttFigures(), PeerTunnels())


def test_only_a_peer_may_post_and_its_reports_are_recorded_newest_first():
    here = _reports()
    assert here.usage is not None
    here.usage.record("n1", _usage(15.0, cpu=7))  # the node is (also) connected here: newer
    here.mqtt.record("n3", _summary(15.0))  # connected here, and gone on the peer below
    body = next(encode_batches("10.0.0.1", [
        SharedReport(METRICS_KIND, "n1", _usage(12.0)),
        SharedReport(METRICS_KIND, "n2", _usage(12.0, cpu=9)),
        SharedReport(MQTT_KIND, "n2", _summary(12.0)),
        SharedReport(MQTT_KIND, "n3", None),
        SharedReport(TUNNEL_KIND, "n2", _tunnel())]))
    with pytest.raises(errors.StatusError) as e:
        _post(here, body, _Transport())
    assert e.value.code == 401
    with pytest.raises(errors.StatusError) as e:
        _post(here, body, _Transport("system:admin", ("system:masters",)))
    assert e.value.code == 403 and "only the cluster's servers" in e.value.message
    with pytest.raises(errors.StatusError) as e:
        _post(here, b'{"server": "x"}', _Transport(PEER_USER, PEER_GROUPS))
    assert e.value.code == 400 and 'list of "reports"' in e.value.message
    assert here.usage.node("n2") is None

    assert _post(here, body, _Transport(PEER_USER, PEER_GROUPS)).status == 204
    assert here.usage.node("n1").node.cpu == 7  # the newer one kept
    assert here.usage.node("n2").node.cpu == 9 and here.usage.pod("uid-1").usage.name == "web"
    assert here.mqtt.get("n2") == _summary(12.0)
    assert here.mqtt.get("n3") == _summary(15.0)  # gone at the peer, not here
    assert here.tunnels.table({}) == {"n2": {**_tunnel().to_content(), "server": "10.0.0.1"}}
    assert here.newest() == {}  # recorded, never shared again: no loops


def test_shared_summaries_give_way_and_expire():
    now = [100.0]
    figures = MqttFigures(clock=lambda: now[0])
    figures.record("n1", _summary(10.0), via="b")
    figures.record("n1", _summary(9.0, rate=9), via="c")  # older: not taken
    assert figures.get("n1") == _summary(10.0)
    figures.record("n1", _summary(5.0, rate=5))  # the node itself, whatever its time
    assert not figures.forget("n1", via="b") and figures.get("n1") == _summary(5.0, rate=5)
    figures.record("n2", _summary(10.0), via="b")
    figures.record("n3", _summary(10.0), via="c")
    now[0] = 150.0
    figures.record("n4", _summary(10.0), via="b")
    figures.expire({"b"}, older_than=120.0)  # c is no longer a peer, n2 was not refreshed
    assert sorted(figures.table()) == ["n1", "n4"]


def test_a_server_keeps_its_nodes_newest_reports_for_the_peers():
    here = _reports()
    here.share(METRICS_KIND, "n1", _usage(10.0))
    here.share(METRICS_KIND, "n1", _usage(11.0))
    here.share(MQTT_KIND, "n1", _summary(11.0))
    here.share(MQTT_KIND, "n2", _summary(11.0))
    here.share(MQTT_KIND, "n2", None)  # its link went down here
    here.share(TUNNEL_KIND, "n2", _tunnel())
    here.share(TUNNEL_KIND, "n2", _tunnel(connected=False, last_seen=120.0))  # shared too
    assert here.newest() == {
        (METRICS_KIND, "n1"): SharedReport(METRICS_KIND, "n1", _usage(11.0)),
        (MQTT_KIND, "n1"): SharedReport(MQTT_KIND, "n1", _summary(11.0)),
        (TUNNEL_KIND, "n2"): SharedReport(TUNNEL_KIND, "n2", _tunnel(False, 120.0))}


def test_a_report_from_the_future_counts_as_taken_now():
    """A node whose clock ran ahead, then was set right (NTP on a box with a drifting clock):
    its future-dated report must not stay fresh and outrank its correct ones, here or on the
    servers it is shared with."""
    now = [1000.0]
    store = UsageStore(clock=lambda: now[0])
    store.record("n1", _usage(5000.0, cpu=1))  # an hour ahead
    assert store.node("n1").timestamp == 1000.0
    now[0] = 1015.0
    store.record("n1", _usage(1015.0, cpu=2), newer_only=True)  # the clock set right
    assert store.node("n1").node.cpu == 2


def test_a_peers_batches_are_not_audited_by_default_anyone_elses_posts_are(tmp_path):
    """A peer's POST comes every SEND_EVERY: the default audit policy (as the server builds
    it) skips it by the peer's user and the path; a refused caller's POST is logged, in its
    name."""
    path = tmp_path / "audit.log"
    policy = AuditPolicy.default(quiet=[(PEER_USER, PEER_REPORTS_PATH)])
    audit = AuditLog(str(path), policy)
    here = _reports()
    body = next(encode_batches("10.0.0.1", [SharedReport(MQTT_KIND, "n1", None)]))
    middleware = audit.middleware(lambda request: (request.method.lower(), None))

    async def post(transport: _Transport) -> int:
        try:
            return (await middleware(_request(body, transport), here.receive)).status
        except errors.StatusError as e:
            return e.code
    try:
        assert asyncio.run(post(_Transport(PEER_USER, PEER_GROUPS))) == 204
        assert path.read_text() == ""
        assert asyncio.run(post(_Transport("system:admin", ("system:masters",)))) == 403
        lines = [orjson.loads(line) for line in path.read_text().splitlines()]
    finally:
        audit.close()
    assert [(e["user"]["username"], e["requestURI"], e["level"]) for e in lines] == [
        ("system:admin", PEER_REPORTS_PATH, "Metadata")]
    assert policy.decide(PEER_USER, list(PEER_GROUPS), "get", None, "/version")[0] == \
        "Metadata"  # the peer's other calls are audited
