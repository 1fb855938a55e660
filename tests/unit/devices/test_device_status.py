"""Device status from the edge without a server: reports merged with a bounded history and
persisted as records (twin.py), the tunnel's DeviceReport contract (tunnel/protocol.py), and
how a report lands in a Device's status (server/edge/devicestatus.py)."""

from __future__ import annotations

import pytest

from k3py.agent.devices.manager import report_message
from k3py.agent.devices.twin import HISTORY_LIMIT, Device, Report, Reported, Twin, TwinValue
from k3py.server.edge.devicestatus import apply_report, missing_twins, property_names
from k3py.server.edge.devicesync import edge_view
from k3py.tunnel.protocol import DeviceReport, ReportedValue, device_status_resource

pytestmark = pytest.mark.unit


def reading(n: int) -> Reported:
    return Reported(str(n), 1000 + n, "int")


def test_merge_keeps_the_newest_and_a_bounded_history_in_order():
    held = Report("default", "thermo", {"t": reading(0)})
    for n in range(1, 30):
        held.merge(Report("default", "thermo", {"t": reading(n)}))
    held.merge(Report("default", "thermo", state="online"))
    assert held.twins["t"] == reading(29) and held.state == "online"
    assert held.history["t"] == [reading(n) for n in range(29 - HISTORY_LIMIT, 29)]


def test_report_record_round_trip():
    r = Report("ns", "d", {"t": reading(2)}, "offline", "2026-01-01T00:00:00Z",
               {"t": [reading(1)]})
    assert Report.from_record(r.record()) == r


def test_report_message_carries_values_history_and_desired():
    dev = Device("ns", "d", twins={"t": Twin(type="int", expected=TwinValue("5", 7))})
    msg = report_message(Report("ns", "d", {"t": reading(2)}, history={"t": [reading(1)]}), dev)
    assert msg.route.resource == device_status_resource("ns", "d") == "devices/ns/d/status"
    back = DeviceReport.from_content(msg.content)
    assert back.twins == {"t": ReportedValue("2", 1002, "int")}
    assert back.history == {"t": [ReportedValue("1", 1001, "int")]}
    assert back.desired == {"t": ReportedValue("5", 7, "int")}


@pytest.mark.parametrize("content", [None, [], {"twins": []}, {"twins": {"t": {"value": 1}}},
                                     {"twins": {}, "history": []}])
def test_bad_reports_are_refused(content):
    with pytest.raises(ValueError):
        DeviceReport.from_content(content)


V1ALPHA2 = {"spec": {"nodeSelector": {}},
            "status": {"twins": [{"propertyName": "t", "desired": {"value": "9"}}]}}


def test_v1alpha2_reported_value_with_string_metadata():
    dev = apply_report(_copy(V1ALPHA2), DeviceReport({"t": ReportedValue("3", 1234, "int")},
                                                     state="online"), set(), v1beta1=False)
    assert dev["status"] == {"twins": [{"propertyName": "t", "desired": {"value": "9"},
                                        "reported": {"value": "3", "metadata": {
                                            "timestamp": "1234", "type": "int"}}}]}


def test_an_older_reading_never_replaces_a_newer_one():
    dev = apply_report(_copy(V1ALPHA2), DeviceReport({"t": ReportedValue("3", 2000)}), set(),
                       v1beta1=False)
    assert apply_report(_copy(dev), DeviceReport({"t": ReportedValue("2", 1000)}), set(),
                        v1beta1=False) is None
    assert apply_report(_copy(dev), DeviceReport({"t": ReportedValue("3", 2000)}), set(),
                        v1beta1=False) is None  # a resend: nothing to write


def test_v1beta1_state_observed_desired_and_twins_the_model_names():
    dev = {"spec": {"nodeName": "n", "properties": [{"name": "t", "desired": {"value": "5"}}]}}
    model = {"spec": {"properties": [{"name": "t"}, {"name": "h"}]}}
    report = DeviceReport({"t": ReportedValue("4", 1), "h": ReportedValue("40", 1),
                           "x": ReportedValue("1", 1)}, desired={"t": ReportedValue("5", 0)},
                          state="online", last_online="2026-01-01T00:00:00Z")
    assert missing_twins(dev, report) == {"t", "h", "x"}
    out = apply_report(dev, report, property_names(dev, model), v1beta1=True)
    twins = {t["propertyName"]: t for t in out["status"]["twins"]}
    assert set(twins) == {"t", "h"}  # x: neither the model nor the spec names it
    assert twins["t"]["observedDesired"] == {"value": "5", "metadata": {"timestamp": "0",
                                                                        "type": "string"}}
    assert out["status"]["state"] == "online"
    assert out["status"]["lastOnlineTime"] == "2026-01-01T00:00:00Z"


def test_what_the_node_reported_is_not_news_for_the_node():
    before = {"metadata": {"name": "d", "resourceVersion": "1"}, "spec": {"nodeName": "n"},
              "status": {"twins": [{"propertyName": "t", "desired": {"value": "1"}}]}}
    after = apply_report(_copy(before), DeviceReport({"t": ReportedValue("3", 5)},
                                                     state="online"), set(), v1beta1=True)
    after["metadata"]["resourceVersion"] = "2"
    assert edge_view(before) == edge_view(after)
    after["status"]["twins"][0]["desired"]["value"] = "2"
    assert edge_view(before) != edge_view(after)


def _copy(obj: dict) -> dict:
    import copy
    return copy.deepcopy(obj)
