"""The tunnel column on a shared datastore (k3py/server/edge/peertunnels.py), without a
network: this server's sessions merged with the tunnels the peers shared, one entry per node (a
connected one first, else the newer last seen, this server's on a tie) saying which server
holds it; a peer's entries going with its Lease or when not refreshed; each change told."""

from __future__ import annotations

import pytest

from k3py.server.edge import peertunnels
from k3py.server.edge.peertunnels import PeerTunnels, TunnelReport

pytestmark = pytest.mark.unit


def _t(connected: bool, last_seen: float | None) -> TunnelReport:
    return TunnelReport(connected, 1.0 if connected else None, last_seen, 0, None, 0)


def _servers(table: dict[str, dict]) -> dict[str, str]:
    return {node: f["server"] for node, f in table.items()}


def test_a_connected_tunnel_wins_else_the_newer_last_seen():
    peers = PeerTunnels()
    peers.record("moved", "b", _t(True, 50.0))  # the node went from here to b
    peers.record("gone", "b", _t(False, 50.0))
    peers.record("left", "b", _t(False, 30.0))
    peers.record("there", "b", _t(False, 10.0))
    peers.record("there", "c", _t(True, 5.0))  # a tunnel moved from b to c
    peers.record("tie", "b", _t(False, 20.0))
    own = {"moved": _t(False, 60.0), "gone": _t(False, 40.0), "left": _t(True, 20.0),
           "tie": _t(False, 20.0), "mine": _t(True, 1.0)}
    table = peers.table(own)
    assert _servers(table) == {"moved": "b", "gone": "b", "left": "", "there": "c", "tie": "",
                               "mine": ""}
    assert table["moved"] == {"connected": True, "connectedSince": 1.0, "lastSeen": 50.0,
                              "reconnects": 0, "rttMs": None, "queued": 0, "server": "b"}
    assert PeerTunnels().table({"n": _t(False, None)})["n"]["server"] == ""


def test_a_peers_tunnels_go_with_its_lease_or_when_not_refreshed_and_changes_are_told():
    now = [100.0]
    peers = PeerTunnels(clock=lambda: now[0])
    told: list[str] = []
    peers.listeners.add(told.append)
    peers.record("n1", "b", _t(True, 1.0))
    peers.record("n2", "c", _t(True, 1.0))
    now[0] = 150.0
    peers.record("n3", "b", _t(False, 1.0))
    peers.record("n1", "c", _t(False, 2.0))
    assert told == ["n1", "n2", "n3", "n1"]
    peers.expire({"b", "c"}, older_than=120.0)  # n1 via b and n2 were not refreshed
    assert _servers(peers.table({})) == {"n1": "c", "n3": "b"}
    peers.expire({"b"}, older_than=120.0)  # c's Lease lapsed
    assert _servers(peers.table({})) == {"n3": "b"}
    assert told == ["n1", "n2", "n3", "n1", "n1", "n2", "n1"]


def test_the_nodes_kept_are_bounded(monkeypatch):
    monkeypatch.setattr(peertunnels, "MAX_NODES", 2)
    peers = PeerTunnels()
    for node in ("a", "b", "c"):
        peers.record(node, "p", _t(True, 1.0))
    peers.record("a", "q", _t(True, 2.0))  # a node kept: more of its servers are
    assert sorted(peers.table({})) == ["a", "b"]
