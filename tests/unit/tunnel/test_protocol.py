"""The wire names both ends share (k3py.tunnel.protocol): stream requests and join bodies
keep the field names agents already speak, and round-trip through their records."""

from __future__ import annotations

import pytest

from k3py.tunnel.message import EDGE, hello
from k3py.tunnel.protocol import (
    FEATURES,
    ConnectRequest,
    ExecRequest,
    LogRequest,
    NodeCertRequest,
    NodeCertResponse,
    PortForwardRequest,
    content_data,
    content_flow_off,
    data_content,
    features_header,
    flow_off_content,
    hello_features,
    parse_features,
)

pytestmark = pytest.mark.unit


def test_log_request_wire_names_and_round_trip():
    req = LogRequest("ns", "p", "u1", "c", follow=True, tail_lines="5", since_seconds=None,
                     since_time="2024-01-01T00:00:00Z", timestamps=True, previous=False,
                     limit_bytes="100")
    content = req.to_content()
    assert content == {"namespace": "ns", "pod": "p", "uid": "u1", "container": "c",
                       "follow": True, "tailLines": "5", "sinceSeconds": None,
                       "sinceTime": "2024-01-01T00:00:00Z", "timestamps": True,
                       "previous": False, "limitBytes": "100"}
    assert LogRequest.from_content(content) == req


def test_exec_and_portforward_requests_round_trip():
    req = ExecRequest("ns", "p", "u1", "c", ["sh", "-c", "id"], stdin=True, tty=False)
    assert req.to_content() == {"namespace": "ns", "pod": "p", "uid": "u1", "container": "c",
                                "command": ["sh", "-c", "id"], "stdin": True, "tty": False}
    assert ExecRequest.from_content(req.to_content()) == req
    pf = PortForwardRequest("ns", "p", "u1", 8080, flow=True)
    assert pf.to_content() == {"namespace": "ns", "pod": "p", "uid": "u1", "port": 8080,
                               "flow": True}
    assert PortForwardRequest.from_content(pf.to_content()) == pf
    # a request from a server older than flow control has no "flow": not flow controlled
    old = {"namespace": "ns", "pod": "p", "uid": "u1", "port": 8080}
    assert PortForwardRequest.from_content(old).flow is False
    assert ExecRequest.from_content(None) == ExecRequest("", "", "", "")


def test_data_frames_carry_base64():
    assert data_content(b"hi") == {"data": "aGk="}
    assert data_content(b"hi", 2) == {"fd": 2, "data": "aGk="}
    assert content_data({"data": "aGk="}) == b"hi"
    assert content_data(None) == b""


def test_join_bodies():
    assert NodeCertRequest("pi-1", "s").to_dict() == {"nodeName": "pi-1", "nodePassword": "s"}
    assert NodeCertRequest.from_dict({"nodeName": "pi-1"}) == NodeCertRequest("pi-1", "")
    with pytest.raises(KeyError):
        NodeCertRequest.from_dict({})
    resp = NodeCertResponse("C", "K", "CA")
    assert NodeCertResponse.from_dict(resp.to_dict()) == resp


def test_features_travel_in_the_dial_header_and_the_hello():
    assert parse_features(features_header()) == FEATURES == {"flow-control", "udp-connect",
                                                             "node-status"}
    assert parse_features(" flow-control , ,future-thing") == {"flow-control", "future-thing"}
    assert parse_features(None) == parse_features("") == frozenset()  # an older agent
    assert hello_features(hello(FEATURES, source=EDGE).content) == FEATURES
    for bad in (None, "x", {"features": "flow-control"}, {}):  # an older or broken server
        assert hello_features(bad) == frozenset()
    assert hello_features({"features": ["flow-control", 3]}) == {"flow-control"}


def test_a_connect_request_says_whether_it_is_flow_controlled():
    req = ConnectRequest("10.42.1.5", 53, "udp", flow=True)
    assert req.to_content() == {"ip": "10.42.1.5", "port": 53, "protocol": "udp", "flow": True}
    assert ConnectRequest.from_content(req.to_content()) == req
    # from an older peer: no "flow", not flow controlled
    assert ConnectRequest.from_content({"ip": "10.42.1.5", "port": 80}).flow is False
    assert content_flow_off(flow_off_content())
    assert not content_flow_off({}) and not content_flow_off(None)
