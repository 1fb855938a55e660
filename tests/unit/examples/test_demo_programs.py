"""The demos' programs without a cluster: the publisher's readings (the reference's fields and
types), the analysis's windows and threshold, and the counter's web controller answering the
upstream routes with the upstream JSON against a fake Device API (including a 409 retried)."""

from __future__ import annotations

import datetime
import importlib.util
import io
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _load(relpath: str):
    spec = importlib.util.spec_from_file_location(relpath.replace("/", "_")[:-3],
                                                  EXAMPLES / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


publisher = _load("data-analysis/publisher.py")
analysis = _load("data-analysis/analysis.py")
web = _load("counter/web_controller.py")


def test_publisher_readings_as_the_reference():
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    r = publisher.reading(3, now)
    assert list(r) == ["ID", "Device", "CreateTime", "Label", "Units", "Value", "MachineID"]
    assert r == {"ID": 3, "Device": "cc2650", "CreateTime": "2026-01-02T03:04:05.000+00:00",
                 "Label": "Temperature", "Units": "DegreeCelcius", "Value": "100",
                 "MachineID": "M3030"}
    values = [publisher.reading(i, now)["Value"] for i in range(22)]
    assert values[:10] == ["80", "90", "80", "100", "100", "80", "95", "95", "75", "80"]
    assert values[20:] == values[:2]  # the sequence of 20 repeats


def test_analysis_windows_and_threshold():
    assert analysis.window_of(1000.0, 10) == (1000.0, 1010.0)
    assert analysis.window_of(1009.99, 10) == (1000.0, 1010.0)
    readings = [{"Value": "80"}, {"Value": "90"}, {"Value": "95"}, {"Value": "x"}, {}]
    assert analysis.above(readings, 90) == [{"Value": "95"}]


class FakeDevices:
    """The Device API as the web controller uses it: GET, and merge PATCH with a
    resourceVersion precondition (409 on a stale one)."""

    def __init__(self) -> None:
        self.device = {"metadata": {"name": "counter", "resourceVersion": "1"},
                       "status": {"twins": [
                           {"propertyName": "status",
                            "desired": {"value": "OFF", "metadata": {"type": "string"}},
                            "reported": {"value": "0", "metadata": {"type": "string"}}}]}}
        self.patches: list[dict] = []
        self.conflicts = 0  # how many PATCHes to refuse with 409 first

    def get(self) -> dict:
        return json.loads(json.dumps(self.device))

    def patch(self, body: dict) -> dict:
        if self.conflicts:
            self.conflicts -= 1
            self.report("41")  # the edge reported meanwhile
            raise urllib.error.HTTPError("u", 409, "Conflict", {}, io.BytesIO(b"{}"))
        assert body["metadata"]["resourceVersion"] == self.device["metadata"]["resourceVersion"]
        self.patches.append(body)
        self.device["status"] = body["status"]
        self._bump()
        return self.get()

    def report(self, value: str) -> None:
        self.device["status"]["twins"][0]["reported"]["value"] = value
        self._bump()

    def _bump(self) -> None:
        rv = self.device["metadata"]["resourceVersion"]
        self.device["metadata"]["resourceVersion"] = str(int(rv) + 1)


@pytest.fixture
def controller():
    devices = FakeDevices()
    server = ThreadingHTTPServer(("127.0.0.1", 0), web.handler(devices, "counter"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield devices, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _call(port: int, path: str, method: str = "POST") -> tuple[int, dict | str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            body = r.read().decode()
            is_json = r.headers["Content-Type"].startswith("application/json")
            return r.status, json.loads(body) if is_json else body
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_web_controller_upstream_routes(controller, capsys):
    devices, port = controller
    assert _call(port, "/track/control/STATUS", "GET") == (
        200, {"Result": 3, "ResultString": {"status": "OFF", "value": "0"},
              "ResultObject": None})
    assert _call(port, "/track/control/ON") == (
        200, {"Result": 1, "ResultString": {}, "ResultObject": None})
    twin = devices.device["status"]["twins"][0]
    assert twin["desired"]["value"] == "ON" and twin["desired"]["metadata"]["type"] == "string"
    assert twin["reported"]["value"] == "0"  # the edge's to write, not the controller's
    devices.report("7")
    assert _call(port, "/track/control/STATUS")[1]["ResultString"] == {"status": "ON",
                                                                       "value": "7"}
    # a repeated command is not written again
    assert _call(port, "/track/control/ON", "GET")[1]["Result"] == 1
    assert len(devices.patches) == 1
    assert _call(port, "/track/control/OFF")[1] == {"Result": 2, "ResultString": {},
                                                    "ResultObject": None}
    assert _call(port, "/track/control/PLAY")[1] == {"Result": 0, "ResultString": {},
                                                     "ResultObject": None}
    assert _call(port, "/track/control/ON/x")[0] == 404
    status, page = _call(port, "/", "GET")
    assert status == 200 and "ON</button>" in page and "OFF</button>" in page
    assert "Turn ON counter" in capsys.readouterr().out


def test_web_controller_conflict_keeps_the_edge_report(controller):
    devices, port = controller
    devices.conflicts = 1
    assert _call(port, "/track/control/ON")[1]["Result"] == 1
    twin = devices.device["status"]["twins"][0]
    assert twin["desired"]["value"] == "ON"
    assert twin["reported"]["value"] == "41"  # read again after the 409: not overwritten


def test_mapper_command_imports_no_server_or_agent_code():
    # the mapper image holds only what `k3py mapper` imports: keep that path small
    code = ("import sys\nfrom k3py.cli import main\n"
            "try:\n    main(['mapper', 'counter', '--help'])\nexcept SystemExit:\n    pass\n"
            "import k3py.mapper.sdk, k3py.mapper.simulated, k3py.mapper.counter\n"
            "print('LOADED:' + ' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('aiohttp', 'apsw', 'cryptography', 'amqtt', 'uvloop', 'kubernetes') "
            "or m.startswith(('k3py.server', 'k3py.agent', 'k3py.tunnel', 'k3py.api')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "LOADED:", out.stdout
