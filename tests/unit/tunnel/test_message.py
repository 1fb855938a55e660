"""The tunnel envelope and its framing: round trips, KubeEdge-style field names, bad frames.

Pure tests of k3py.tunnel.message and k3py.tunnel.framing."""

from __future__ import annotations

import pytest

from k3py.tunnel import framing
from k3py.tunnel.message import (
    GROUP_RESOURCE,
    GROUP_STREAM,
    OP_INSERT,
    ack_for,
    needs_ack,
    new_message,
    resource_key,
    split_resource_key,
)

pytestmark = pytest.mark.unit


def test_round_trip_keeps_every_field():
    msg = new_message(source="cloudhub", destination="edgehub", group=GROUP_RESOURCE,
                      operation=OP_INSERT, resource="pods/default/web",
                      content={"spec": {"x": 1}}, parent_id="p1", resource_version="42",
                      sync=True)
    back = framing.decode(framing.encode(msg))
    assert back == msg
    assert back.header.parent_id == "p1" and back.header.resource_version == "42"
    assert back.header.sync is True and back.header.timestamp > 0
    assert back.route.destination == "edgehub"


def test_wire_names_follow_beehive():
    d = new_message(source="a", group="g", operation="o").to_dict()
    assert set(d["header"]) == {"msg_id", "parent_msg_id", "timestamp", "resourceversion",
                                "sync"}
    assert set(d["route"]) == {"source", "destination", "group", "operation", "resource"}


def test_ids_are_unique():
    ids = {new_message(source="a", group="g", operation="o").id for _ in range(1000)}
    assert len(ids) == 1000


@pytest.mark.parametrize("frame", ["not json", "[1,2]", '{"header": {}, "route": {}}',
                                   '{"header": {"msg_id": "x"}}', '{"route": 1, "header": 2}'])
def test_bad_frames_raise_framing_error(frame):
    with pytest.raises(framing.FramingError):
        framing.decode(frame)


def test_oversized_frame_rejected():
    with pytest.raises(framing.FramingError):
        framing.decode(b" " * (framing.MAX_FRAME_BYTES + 1))


def test_ack_batches_ids_and_is_not_itself_acked():
    ack = ack_for(["a", "b"], source="edgehub")
    assert ack.content == {"ids": ["a", "b"]}
    assert not needs_ack(ack)
    assert not needs_ack(new_message(source="a", group=GROUP_STREAM, operation="data"))
    assert needs_ack(new_message(source="a", group=GROUP_RESOURCE, operation=OP_INSERT))


def test_resource_keys():
    assert resource_key("pods", "ns", "p", "status") == "pods/ns/p/status"
    assert split_resource_key("pods/ns/p/status") == ("pods", "ns", "p", "status")
    assert split_resource_key("nodes//n1") == ("nodes", None, "n1", "")
    with pytest.raises(ValueError):
        split_resource_key("pods")


def test_a_shared_message_keeps_its_frame_until_its_content_changes():
    msg = framing.shared(new_message(source="s", group="resource", operation="update",
                                     content={"n": 1}))
    assert framing.encode(msg) is msg.frame
    assert framing.decode(msg.frame) == msg
    changed = msg.with_content({"n": 2})
    assert framing.decode(framing.encode(changed)).content == {"n": 2}


def test_a_node_takes_a_bigger_frame_from_its_server_and_an_oversized_one_is_logged(caplog):
    """A node's frames to the server stay within MAX_FRAME_BYTES; the server's to a node may
    reach MAX_DOWN_FRAME_BYTES (a sync with every pod's peer view), and a shared message
    over it is logged as an error where it is made (the node would drop its link on it)."""
    big = new_message(source="cloud", group="resource", operation="sync",
                      content={"podpeers": ["x" * (framing.MAX_FRAME_BYTES + 10)]})
    frame = framing.encode(big)
    with pytest.raises(framing.FramingError):
        framing.decode(frame)
    assert framing.decode(frame, framing.MAX_DOWN_FRAME_BYTES).content == big.content
    assert not caplog.records
    huge = new_message(source="cloud", group="resource", operation="sync",
                       content={"podpeers": ["x" * (framing.MAX_DOWN_FRAME_BYTES + 10)]})
    framing.shared(huge)
    assert "over their" in caplog.text
