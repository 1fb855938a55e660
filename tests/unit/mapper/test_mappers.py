"""The mapper SDK's protocol side and the three built-in mappers, without a broker: the DHT11
through the real `dht11` package against a fake RPi.GPIO with the sensor's timing and faults,
the simulated series, the counter's commands, the SDK's payloads as the agent's twin reads them."""

from __future__ import annotations

import importlib
import sys

import orjson
import pytest

from k3py.agent.devices.twin import Device, DeviceTwins, Twin
from k3py.cli import main
from k3py.cli.flags import UsageError, mapper_options
from k3py.mapper import topics as t
from k3py.mapper.counter import CounterMapper
from k3py.mapper.dht import DHT11Mapper
from k3py.mapper.sdk import MapperError, MapperSession, format_value
from k3py.mapper.simulated import SimulatedMapper, reading
from tests.unit.mapper.fake_gpio import BCM, BOARD, FakeDHT11Line, make_gpio

pytestmark = pytest.mark.unit


@pytest.fixture
def sensor(monkeypatch):
    """A DHT11 on BCM pin 11 behind a fake RPi.GPIO; the dht11 package is the real one."""
    line = FakeDHT11Line()
    package, gpio = make_gpio(line, 11)
    monkeypatch.setitem(sys.modules, "RPi", package)
    monkeypatch.setitem(sys.modules, "RPi.GPIO", gpio)
    dht11 = pytest.importorskip("dht11")
    monkeypatch.setattr(importlib.import_module("dht11"), "RPi", package)
    assert dht11
    line.gpio = gpio
    return line


def dht(**kw):
    m = DHT11Mapper(retry_delay=0, **kw)
    m.setup()
    return m


# ---------------------------------------------------------------- dht11

def test_dht11_reads_like_the_upstream_demo(sensor):
    m = dht()
    assert sensor.gpio.state["mode"] == BCM
    assert m.read("temperature-status") == "24C" and m.read("humidity") == 40
    sensor.temperature, sensor.humidity = (21, 5), (55, 0)
    assert m.read("temperature-status") == "21.5C" and m.read("humidity") == 55
    m.close()
    assert sensor.gpio.state["cleaned"] == 1


@pytest.mark.parametrize("fault", ["checksum", "missing", "silent"])
def test_dht11_bad_reads_are_retried(sensor, fault):
    sensor.faults.extend([fault, fault])
    m = dht()
    assert m.read("temperature-status") == "24C"
    assert sensor.reads == 3


def test_dht11_gives_up_with_the_reason(sensor):
    sensor.faults.extend(["checksum", "missing", "checksum"])
    m = dht(attempts=3)
    with pytest.raises(OSError, match="after 3 attempts: checksum, missing data, checksum"):
        m.read("temperature-status")
    with pytest.raises(OSError):  # no stale humidity after a failed reading
        m.read("humidity")


def test_dht11_board_numbering(sensor):
    sensor.gpio.state["mode"] = None
    dht(pin_mode="board")
    assert sensor.gpio.state["mode"] == BOARD


def test_dht11_off_a_pi_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "RPi.GPIO", None)  # import fails, as without the package
    with pytest.raises(MapperError, match="needs a Raspberry Pi's GPIO"):
        DHT11Mapper().setup()


def test_cli_dht11_off_a_pi_exits_1_with_one_line(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "RPi.GPIO", None)
    assert main(["mapper", "dht11", "--device", "temperature"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("k3py: error: the dht11 mapper needs")


# ---------------------------------------------------------------- simulated and counter

def test_simulated_series_is_deterministic_per_seed():
    a = [reading(7, n) for n in range(50)]
    assert a == [reading(7, n) for n in range(50)] and a != [reading(8, n) for n in range(50)]
    assert all(15 < temp < 30 and 0 <= hum <= 100 for temp, hum in a)
    m = SimulatedMapper(seed=7)
    assert m.read("temperature-status") == format_value(a[0][0]) + "C"
    assert m.read("humidity") == a[0][1]
    assert m.read("temperature-status") == format_value(a[1][0]) + "C"


def test_counter_on_counts_off_reports_zero_once_repeats_ignored():
    c = CounterMapper()
    assert [c.read("status") for _ in range(2)] == [0, None]
    c.write("status", "ON")
    assert [c.read("status") for _ in range(3)] == [1, 2, 3]
    c.write("status", "ON")  # repeated: keeps counting
    assert c.read("status") == 4
    c.write("status", "OFF")
    assert [c.read("status") for _ in range(3)] == [0, None, None]
    c.write("status", "off")
    assert c.read("status") is None
    with pytest.raises(ValueError):
        c.write("status", "BLINK")


# ---------------------------------------------------------------- the SDK's protocol side

@pytest.mark.parametrize("namespace, prefix", [("", "$hw/events/device/counter/"),
                                               ("iot", "$hw/events/device/iot/counter/")])
def test_session_topics_in_both_forms(namespace, prefix):
    s = MapperSession(CounterMapper(), "counter", namespace)
    assert s.topic(t.TWIN_UPDATE) == prefix + "twin/update"
    assert s.subscriptions() == [prefix + "twin/update/delta", prefix + "twin/update/document",
                                 prefix + "twin/get/result"]
    assert MapperSession(SimulatedMapper(), "t").subscriptions() == []  # read-only


def test_session_desired_values_from_delta_document_and_get_once():
    s = MapperSession(CounterMapper(), "counter")
    delta = orjson.dumps({"delta": {"status": "ON", "other": "x"}, "twin": {}})
    assert s.desired(s.topic(t.TWIN_UPDATE_DELTA), delta) == {"status": "ON"}
    s.applied["status"] = "ON"
    assert s.desired(s.topic(t.TWIN_UPDATE_DELTA), delta) == {}  # repeated command
    doc = orjson.dumps({"twin": {"status": {"last": None, "current": {
        "expected": {"value": "OFF"}, "actual": {"value": "3"}}}}})
    assert s.desired(s.topic(t.TWIN_UPDATE_DOCUMENT), doc) == {"status": "OFF"}
    got = orjson.dumps({"twin": {"status": {"expected": {"value": "OFF"}}}})
    assert s.desired(s.topic(t.TWIN_GET_RESULT), got) == {"status": "OFF"}
    assert s.desired(s.topic(t.TWIN_GET_RESULT), b"junk") == {}
    assert s.desired(s.topic(t.TWIN_UPDATE_DOCUMENT), b'{"twin": {"status": null}}') == {}


def test_session_health_online_unhealthy_online():
    s = MapperSession(SimulatedMapper(), "t")
    assert s.interval_done(2) == "online" and s.interval_done(2) is None
    assert [s.interval_done(0) for _ in range(3)] == [None, None, "unhealthy"]
    assert s.interval_done(1) == "online"


def test_sdk_payloads_are_what_the_twin_accepts():
    book = DeviceTwins("n")
    book.set_devices([Device("default", "temperature",
                             twins={"temperature-status": Twin(optional=False)})])
    s = MapperSession(SimulatedMapper(), "temperature")
    out = book.handle(s.topic(t.TWIN_UPDATE), s.twin_update({"temperature-status": "22.5C",
                                                             "humidity": "41"}))
    assert out.error is None
    assert {k: r.value for k, r in out.reports[0].twins.items()} == {
        "temperature-status": "22.5C", "humidity": "41"}
    assert book.devices[("default", "temperature")].twins["humidity"].type == "int"
    out = book.handle(s.topic(t.STATE_UPDATE), s.state_update("online"))
    assert out.error is None and out.reports[0].state == "online"


def test_format_value():
    assert [format_value(v) for v in (True, False, 3, 2.50, "24C")] == \
        ["true", "false", "3", "2.5", "24C"]


# ---------------------------------------------------------------- flags

def test_mapper_flags_env_and_durations():
    o = mapper_options(["--device", "t", "--interval", "500ms", "--pin-mode", "BOARD"], {})
    assert (o.device, o.interval, o.pin_mode, o.pin, o.broker) == \
        ("t", 0.5, "board", 11, "tcp://127.0.0.1:1883")
    o = mapper_options([], {"K3PY_DEVICE": "counter", "K3PY_INTERVAL": "1m"})
    assert (o.device, o.interval) == ("counter", 60.0)
    with pytest.raises(UsageError, match="--broker"):
        mapper_options(["--broker", "http://x"], {})


def test_mapper_usage_errors_are_one_line(capsys):
    assert main(["mapper", "toaster"]) == 1
    assert main(["mapper", "counter"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "unknown mapper 'toaster'" in lines[0]
    assert "--device is required" in lines[1]
