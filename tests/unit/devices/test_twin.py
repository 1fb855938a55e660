"""The device twin without a network: every KubeEdge topic in both id forms, upstream's error
answers, versions kept but never published, deletes of optional twins, membership, desired
values from the cloud, coalesced reports and offline after silence."""

from __future__ import annotations

import itertools

import orjson
import pytest

from k3py.agent.devices import twin as tw
from k3py.agent.devices.twin import Device, DeviceTwins, Report, ReportCoalescer, Reported, Twin
from k3py.mapper import topics as t

pytestmark = pytest.mark.unit

LEGACY = "$hw/events/device/temperature/"
NEW = "$hw/events/device/default/temperature/"


class Clock:
    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def book(clock):
    ids = (f"id-{n}" for n in itertools.count())
    b = DeviceTwins("edge-1", wall=lambda: clock.wall, monotonic=lambda: clock.mono,
                    new_id=lambda: next(ids))
    b.set_devices([Device("default", "temperature", twins={
        "temperature-status": Twin(type="string", optional=False),
        "count": Twin(type="int", optional=False),
        "spare": Twin(type="string", optional=True)})])
    return b


def update(book, topic, body):
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return book.handle(topic, raw)


def published(out):
    return [(p.topic, orjson.loads(p.payload)) for p in out.publish]


def actual(value, kind=None):
    msg = {"actual": {"value": value}}
    if kind:
        msg["metadata"] = {"type": kind}
    return msg


# ---------------------------------------------------------------- topics

@pytest.mark.parametrize("topic, expected", [
    ("$hw/events/device/temp/twin/update", t.DeviceTopic("", "temp", "twin/update")),
    ("$hw/events/device/ns/temp/twin/update", t.DeviceTopic("ns", "temp", "twin/update")),
    ("$hw/events/device/temp/twin/update/result",
     t.DeviceTopic("", "temp", "twin/update/result")),
    ("$hw/events/device/ns/temp/twin/update/delta",
     t.DeviceTopic("ns", "temp", "twin/update/delta")),
    ("$hw/events/device/temp/twin/get", t.DeviceTopic("", "temp", "twin/get")),
    ("$hw/events/device/ns/temp/state/update", t.DeviceTopic("ns", "temp", "state/update")),
    ("$hw/events/device/ns/temp/updated", t.DeviceTopic("ns", "temp", "updated")),
    ("$hw/events/node/edge-1/membership/get", t.NodeTopic("edge-1", "membership/get")),
    ("$hw/events/device/twin/update", None),
    ("$hw/events/device/a/b/c/twin/update", None),
    ("$hw/events/device//temp/twin/update", None),
    ("$hw/events/device/temp/twin/nothing", None),
    ("$hw/events/node/edge-1/other", None),
    ("test", None),
])
def test_topics_parse_in_both_id_forms(topic, expected):
    assert t.parse_topic(topic) == expected
    if expected is not None and isinstance(expected, t.DeviceTopic):
        assert t.device_topic(*expected) == topic


def test_twin_name_and_value_patterns_are_upstreams():
    assert t.valid_twin_name("temperature-status") and t.valid_twin_name("a_b.c,d:e/f@g#h")
    assert not t.valid_twin_name("") and not t.valid_twin_name("x" * 129)
    assert not t.valid_twin_name("has space") and not t.valid_twin_name("ü")
    assert t.valid_twin_value("") and t.valid_twin_value("24C") and t.valid_twin_value("x" * 512)
    assert not t.valid_twin_value("x" * 513) and not t.valid_twin_value("40%")


# ---------------------------------------------------------------- twin/update

@pytest.mark.parametrize("prefix", [LEGACY, NEW])
def test_update_answers_result_then_document_then_delta(book, prefix):
    book.set_desired("default", "temperature", {"temperature-status": "30C"})
    out = update(book, prefix + "twin/update", {"event_id": "e1", "timestamp": 1,
                                                 "twin": {"temperature-status": actual("24C")}})
    msgs = published(out)
    topics = [topic for topic, _ in msgs]
    assert topics == [prefix + "twin/update/result",
                      NEW + "twin/update/document", LEGACY + "twin/update/document",
                      NEW + "twin/update/delta", LEGACY + "twin/update/delta"]
    assert out.publish[0].reply and not any(p.reply for p in out.publish[1:])
    result = msgs[0][1]
    ts = int(1_700_000_000.0 * 1000)
    assert result == {"event_id": "e1", "timestamp": ts, "twin": {"temperature-status": {
        "actual": {"value": "24C", "metadata": {"timestamp": ts}},
        "optional": False, "metadata": {"type": "string"}}}}
    doc = msgs[1][1]
    assert doc["event_id"] == "e1"
    last, current = (doc["twin"]["temperature-status"][k] for k in ("last", "current"))
    assert "actual" not in last and last["expected"]["value"] == "30C"
    assert current["actual"]["value"] == "24C" and current["expected"]["value"] == "30C"
    delta = msgs[3][1]
    assert delta["delta"] == {"temperature-status": "30C"}
    assert set(delta["twin"]) == {"temperature-status"}
    assert out.persist == [("default", "temperature")]
    assert out.reports == [Report("default", "temperature", {
        "temperature-status": Reported("24C", ts, "string")})]


def test_no_delta_when_reported_matches_desired(book):
    book.set_desired("default", "temperature", {"temperature-status": "24C"})
    out = update(book, LEGACY + "twin/update",
                 {"event_id": "", "twin": {"temperature-status": actual("24C")}})
    assert [p.topic.rsplit("/", 1)[-1] for p in out.publish] == ["result", "document",
                                                                  "document"]


def test_versions_are_kept_inside_and_never_published(book):
    for value in ("1", "2", "3"):
        out = update(book, NEW + "twin/update", {"twin": {"count": actual(value)}})
        assert b"version" not in b"".join(p.payload for p in out.publish)
    twin = book.devices[("default", "temperature")].twins["count"]
    assert (twin.actual_version.edge, twin.actual_version.cloud) == (3, 0)
    book.set_desired("default", "temperature", {"count": "7"})
    assert twin.expected_version.cloud == 1
    get = book.handle(NEW + "twin/get", b"{}")
    assert b"version" not in get.publish[0].payload
    assert "expected_version" in twin.record()  # what metamanager keeps has them


def test_upstream_demo_metadata_type_updated_is_tolerated(book):
    # kubeedge/examples temperature mapper sends metadata.type "Updated"; the model's type rules
    out = update(book, LEGACY + "twin/update",
                 {"event_id": "", "timestamp": 0,
                  "twin": {"temperature-status": actual("24C", "Updated")}})
    assert orjson.loads(out.publish[0].payload)["twin"]["temperature-status"]["metadata"] == \
        {"type": "string"}


@pytest.mark.parametrize("body, code, reason", [
    (b"not json", 400, tw.ERR_UNMARSHAL),
    (b"[1, 2]", 400, tw.ERR_UNMARSHAL),
    ({"event_id": "e"}, 400, tw.ERR_NO_TWIN),
    ({"event_id": "e", "twin": []}, 400, tw.ERR_UNMARSHAL),
    ({"event_id": "e", "twin": {"bad name": actual("1")}}, 400, tw.ERR_KEY),
    ({"event_id": "e", "twin": {"count": actual("1 2")}}, 400, tw.ERR_VALUE),
    ({"event_id": "e", "twin": {"count": actual("x")}}, 400, "the value is not int or integer"),
    ({"event_id": "e", "twin": {"count": {"actual": {"value": 3}}}}, 400, tw.ERR_UNMARSHAL),
    ({"event_id": "e", "twin": {"new": actual("1", "decimal")}}, 400,
     "the value type is not allowed"),
    ({"event_id": "e", "twin": {"new": actual("1.5", "float"), "nope": None}}, 400, tw.ERR_BODY),
    ({"event_id": "e", "twin": {"b": actual("yes", "boolean")}}, 400,
     "the bool value must be true or false"),
])
def test_bad_updates_get_upstreams_error_form_and_change_nothing(book, clock, body, code,
                                                                   reason):
    before = book.devices[("default", "temperature")].record()
    out = update(book, NEW + "twin/update", body)
    assert [p.topic for p in out.publish] == [NEW + "twin/update/result"]
    answer = orjson.loads(out.publish[0].payload)
    assert answer == {"event_id": "e" if isinstance(body, dict) else "",
                      "timestamp": int(clock.wall * 1000), "code": code, "reason": reason}
    assert out.error is not None and out.error[0] == "default/temperature"
    assert not out.reports and not out.persist
    assert book.devices[("default", "temperature")].record() == before


def test_unknown_device_is_404_in_the_form_asked(book):
    out = update(book, "$hw/events/device/nope/twin/update", {"event_id": "x", "twin": {}})
    assert out.publish[0].topic == "$hw/events/device/nope/twin/update/result"
    body = orjson.loads(out.publish[0].payload)
    assert (body["code"], body["reason"]) == (404, tw.ERR_NOT_EXIST)
    out = book.handle("$hw/events/device/other/temperature/twin/get", b"{}")
    assert out.publish[0].topic == "$hw/events/device/other/temperature/twin/get/result"
    assert orjson.loads(out.publish[0].payload)["code"] == 404


def test_mapper_adds_a_twin_with_its_type(book):
    out = update(book, LEGACY + "twin/update", {"twin": {"humidity": actual("41", "int")}})
    res = orjson.loads(out.publish[0].payload)["twin"]["humidity"]
    assert res["metadata"] == {"type": "int"} and res["optional"] is True
    doc = orjson.loads(out.publish[1].payload)["twin"]["humidity"]
    assert doc["last"] is None and doc["current"]["actual"]["value"] == "41"


def test_null_deletes_an_optional_twin_only(book):
    update(book, NEW + "twin/update", {"twin": {"spare": actual("x")}})
    out = update(book, NEW + "twin/update", {"twin": {"spare": None,
                                                      "temperature-status": None}})
    assert orjson.loads(out.publish[0].payload)["twin"] == {"spare": None}
    doc = orjson.loads(out.publish[1].payload)["twin"]
    assert set(doc) == {"spare"} and doc["spare"]["current"] is None
    dev = book.devices[("default", "temperature")]
    assert dev.twins["spare"].deleted and not dev.twins["temperature-status"].deleted
    get = orjson.loads(book.handle(NEW + "twin/get", b"{}").publish[0].payload)
    assert "spare" not in get["twin"]
    # a deleted twin comes back with the type the mapper gives
    update(book, NEW + "twin/update", {"twin": {"spare": actual("2.5", "float")}})
    assert dev.twins["spare"].type == "float"


# ---------------------------------------------------------------- twin/get, state, membership

@pytest.mark.parametrize("prefix", [LEGACY, NEW])
def test_twin_get_lists_every_twin(book, prefix):
    update(book, prefix + "twin/update", {"twin": {"count": actual("5")}})
    out = book.handle(prefix + "twin/get", orjson.dumps({"event_id": "g1"}))
    assert [p.topic for p in out.publish] == [prefix + "twin/get/result"]
    body = orjson.loads(out.publish[0].payload)
    assert body["event_id"] == "g1"
    assert body["twin"]["count"]["actual"]["value"] == "5"
    assert set(body["twin"]) == {"temperature-status", "count", "spare"}


@pytest.mark.parametrize("prefix", [LEGACY, NEW])
def test_state_update_answers_and_reports(book, prefix):
    out = book.handle(prefix + "state/update", orjson.dumps({"event_id": "s", "state": "online"}))
    body = orjson.loads(out.publish[0].payload)
    assert out.publish[0].topic == prefix + "state/update/result"
    assert body["device"] == {"name": "temperature", "state": "online",
                              "lastOnlineTime": "2023-11-14T22:13:20Z"}
    assert out.reports[0].state == "online"
    bad = book.handle(prefix + "state/update", orjson.dumps({"state": "sleepy"}))
    assert orjson.loads(bad.publish[0].payload)["code"] == 400


def test_membership_get_and_updated(book):
    out = book.handle("$hw/events/node/edge-1/membership/get", orjson.dumps({"event_id": "m"}))
    assert out.publish[0].topic == "$hw/events/node/edge-1/membership/get/result"
    body = orjson.loads(out.publish[0].payload)
    assert body["event_id"] == "m"
    assert [d["name"] for d in body["devices"]] == ["temperature"]
    assert not book.handle("$hw/events/node/other/membership/get", b"{}").publish
    counter = Device("default", "counter", twins={"status": Twin(optional=False)})
    keep = book.devices[("default", "temperature")]
    out = book.set_devices([keep, counter])
    (msg,) = [p for p in out.publish if p.topic.endswith("membership/updated")]
    body = orjson.loads(msg.payload)
    assert [d["name"] for d in body["added_devices"]] == ["counter"]
    assert body["removed_devices"] == []
    out = book.set_devices([counter])
    body = orjson.loads(out.publish[-1].payload)
    assert [d["name"] for d in body["removed_devices"]] == ["temperature"]


def test_answers_and_outputs_are_not_requests(book):
    for suffix in ("twin/update/result", "twin/update/document", "twin/update/delta",
                   "twin/get/result", "state/update/result", "updated"):
        assert book.handle(NEW + suffix, b"garbage") == tw.Outcome()


# ---------------------------------------------------------------- from the cloud

def test_desired_from_the_cloud_goes_out_in_both_forms(book):
    out = book.set_desired("default", "temperature", {"count": "9"})
    assert [p.topic for p in out.publish] == [
        NEW + "twin/update/document", LEGACY + "twin/update/document",
        NEW + "twin/update/delta", LEGACY + "twin/update/delta"]
    assert orjson.loads(out.publish[2].payload)["delta"] == {"count": "9"}


def test_set_devices_keeps_reported_values_and_sends_new_desired(book):
    update(book, NEW + "twin/update", {"twin": {"count": actual("3")}})
    fresh = Device("default", "temperature", twins={
        "count": Twin(type="int", optional=False, expected=tw.TwinValue("10", 0))},
        attributes={"room": "lab"})
    out = book.set_devices([fresh])
    topics = [p.topic for p in out.publish]
    assert NEW + "updated" in topics and NEW + "twin/update/delta" in topics
    dev = book.devices[("default", "temperature")]
    assert dev.twins["count"].actual.value == "3" and dev.twins["count"].expected.value == "10"


def test_device_from_v1alpha2_and_v1beta1_objects():
    model = {"spec": {"properties": [{"name": "temperature-status",
                                      "type": {"string": {"accessMode": "ReadOnly"}}},
                                     {"name": "count", "type": {"int": {}}}]}}
    dev = tw.device_from_objects({
        "metadata": {"name": "temperature"},
        "status": {"twins": [{"propertyName": "count",
                              "desired": {"value": "4", "metadata": {"type": "int"}}}]}}, model)
    assert dev.key == ("default", "temperature")
    assert dev.twins["count"].type == "int" and dev.twins["count"].expected.value == "4"
    assert dev.twins["temperature-status"].expected is None
    beta = tw.device_from_objects({
        "metadata": {"name": "counter", "namespace": "iot"},
        "spec": {"nodeName": "edge-1", "properties": [
            {"name": "status", "desired": {"value": "ON"}, "reportCycle": 2000}]}},
        {"spec": {"properties": [{"name": "status", "type": "STRING"}]}})
    assert beta.key == ("iot", "counter") and beta.report_cycle == 2.0
    assert beta.twins["status"].expected.value == "ON"
    assert Device.from_record(beta.record()) == beta


# ---------------------------------------------------------------- load and liveness

def test_coalescer_one_report_per_cycle_newest_wins():
    c = ReportCoalescer()

    def rep(value, state=None):
        return Report("default", "d", {"t": Reported(value, 0, "string")}, state)
    c.add(rep("1"), 1.0)
    assert [r.twins["t"].value for r in c.due(10.0)] == ["1"]  # first one goes at once
    for n in range(2, 12):  # 10 Hz for a second
        c.add(rep(str(n)), 1.0)
    c.add(Report("default", "d", state="online"), 1.0)
    assert c.due(10.5) == [] and c.next_due() == 11.0
    (r,) = c.due(11.0)
    assert r.twins["t"].value == "11" and r.state == "online"
    assert c.due(20.0) == [] and len(c) == 0


def test_coalescer_is_per_device():
    c = ReportCoalescer()
    for name in ("a", "b", "c"):
        c.add(Report("ns", name, state="online"))
    assert {r.name for r in c.due(0.0)} == {"a", "b", "c"}


def test_silent_device_goes_offline_after_three_cycles_and_back(book, clock):
    assert book.check_offline() == tw.Outcome()  # never heard: left alone
    update(book, NEW + "twin/update", {"twin": {"count": actual("1")}})
    clock.advance(2.9)
    assert not book.check_offline().reports
    clock.advance(0.2)
    out = book.check_offline()
    assert out.reports == [Report("default", "temperature", state="offline")]
    assert not book.check_offline().reports  # once
    back = update(book, NEW + "twin/update", {"twin": {"count": actual("2")}})
    assert back.reports[0].state == "online" and back.reports[0].twins["count"].value == "2"


def test_offline_after_can_be_set(clock):
    b = DeviceTwins("n", wall=lambda: clock.wall, monotonic=lambda: clock.mono,
                    offline_after=10.0)
    b.set_devices([Device("default", "d", twins={"x": Twin()})])
    b.handle("$hw/events/device/d/state/update", b'{"state":"online"}')
    clock.advance(5)
    assert not b.check_offline().reports
    clock.advance(5)
    assert b.check_offline().reports[0].state == "offline"
