"""The counter demo's web controller (upstream: kubeedge-counter-app on the cloud node, host
network): a page with ON / OFF and the live count, and the upstream routes
`GET|POST /track/control/{ON|OFF|STATUS}` with the upstream answer
`{"Result": 1|2|3|0, "ResultString": {...}, "ResultObject": null}` (STATUS: ResultString is
`{"status": <desired>, "value": <reported count>}`), so the upstream page works against it.

ON / OFF set the desired value of the Device's twin `status` through the Kubernetes API with
the pod's service-account token (a Role allows get and patch on devices); the count is the
twin's reported value, written by the counter mapper on the edge node. Standard library only.
Environment: DEVICE (counter), DEVICE_NAMESPACE (the pod's namespace), PORT (8089),
BIND (0.0.0.0), DEVICE_API_VERSION (v1alpha2)."""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SA = "/var/run/secrets/kubernetes.io/serviceaccount"
PROPERTY = "status"
RESULTS = {"ON": 1, "OFF": 2, "STATUS": 3}


def _read(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


class DeviceClient:
    """GET and merge-PATCH one Device with the in-cluster service-account credentials."""

    def __init__(self, name: str, namespace: str, version: str) -> None:
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise SystemExit("web-controller: not in a cluster (KUBERNETES_SERVICE_HOST unset)")
        host = f"[{host}]" if ":" in host else host
        self.url = (f"https://{host}:{port}/apis/devices.kubeedge.io/{version}/namespaces/"
                    f"{namespace}/devices/{name}")
        self.ssl = ssl.create_default_context(cafile=f"{SA}/ca.crt")

    def _call(self, method: str, body: dict | None = None) -> dict:
        headers = {"Authorization": f"Bearer {_read(f'{SA}/token')}",  # re-read: it rotates
                   "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/merge-patch+json"
        req = urllib.request.Request(self.url, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, context=self.ssl, timeout=10) as r:
            return json.loads(r.read())

    def get(self) -> dict:
        return self._call("GET")

    def patch(self, body: dict) -> dict:
        return self._call("PATCH", body)


def twin_of(device: dict) -> dict:
    for twin in (device.get("status") or {}).get("twins") or []:
        if twin.get("propertyName") == PROPERTY:
            return twin
    return {}


def query_status(client: DeviceClient) -> dict[str, str]:
    """{"status": desired, "value": reported}; OFF and 0 when the Device cannot be read."""
    status = {"status": "OFF", "value": "0"}
    try:
        twin = twin_of(client.get())
    except (OSError, ValueError) as e:
        print(f"reading the device failed: {e}", flush=True)
        return status
    status["status"] = (twin.get("desired") or {}).get("value") or status["status"]
    status["value"] = (twin.get("reported") or {}).get("value") or status["value"]
    return status


def set_desired(client: DeviceClient, command: str) -> bool:
    """Set the twin's desired value, keeping every other twin and the reported values (the
    twins list is replaced by a merge patch, so it is sent whole, guarded by the
    resourceVersion it was read at: a concurrent report from the edge is not lost)."""
    for _ in range(5):
        try:
            device = client.get()
            twins = [dict(t) for t in (device.get("status") or {}).get("twins") or []]
            mine = next((t for t in twins if t.get("propertyName") == PROPERTY), None)
            if mine is None:
                mine = {"propertyName": PROPERTY}
                twins.append(mine)
            if (mine.get("desired") or {}).get("value") == command:
                return True
            mine["desired"] = {"value": command, "metadata": {
                "type": "string", "timestamp": str(int(time.time() * 1000))}}
            client.patch({"metadata": {"resourceVersion":
                                       device["metadata"]["resourceVersion"]},
                          "status": {"twins": twins}})
            print(f"Turn {command} {device['metadata']['name']}", flush=True)
            return True
        except urllib.error.HTTPError as e:
            if e.code != 409:
                print(f"patching the device failed: {e.code} {e.read()[:200]!r}", flush=True)
                return False
        except (OSError, ValueError, KeyError) as e:
            print(f"patching the device failed: {e}", flush=True)
            return False
    print("patching the device failed: conflicts kept coming", flush=True)
    return False


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>KubeEdge counter on k3py</title>
<style>body{font-family:sans-serif;margin:3em}button{font-size:1.4em;margin-right:.5em}
#count{font-size:4em;margin:.3em 0}</style></head>
<body><h1>Counter</h1>
<p>Device <b>%(device)s</b>: desired <b id="status">?</b></p>
<div id="count">?</div>
<button onclick="control('ON')">ON</button><button onclick="control('OFF')">OFF</button>
<p id="msg"></p>
<script>
async function control(cmd) {
  const r = await fetch('/track/control/' + cmd, {method: 'POST'});
  const a = await r.json();
  document.getElementById('msg').textContent =
    a.Result == 1 ? 'Turn On counter' : a.Result == 2 ? 'Turn Off counter' : JSON.stringify(a);
  refresh();
}
async function refresh() {
  try {
    const a = await (await fetch('/track/control/STATUS')).json();
    document.getElementById('status').textContent = a.ResultString.status;
    document.getElementById('count').textContent = a.ResultString.value;
  } catch (e) { document.getElementById('msg').textContent = 'no answer: ' + e; }
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""


def handler(client: DeviceClient, device: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _route(self) -> None:
            path = self.path.split("?", 1)[0]
            if self.command == "GET" and path in ("/", "/index.html"):
                self._send(200, (PAGE % {"device": device}).encode(), "text/html; charset=utf-8")
                return
            prefix = "/track/control/"
            if not path.startswith(prefix) or "/" in path[len(prefix):]:
                self._send(404, b"404 page not found\n", "text/plain")
                return
            command = path[len(prefix):]
            status: dict[str, str] = {}
            if command in ("ON", "OFF"):
                set_desired(client, command)
            elif command == "STATUS":
                status = query_status(client)
            answer = {"Result": RESULTS.get(command, 0), "ResultString": status,
                      "ResultObject": None}
            self._send(200, json.dumps(answer).encode(), "application/json; charset=utf-8")

        def do_GET(self) -> None:  # noqa: N802 - http.server's names
            self._route()

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)  # the upstream page posts an empty form
            self._route()

        def log_message(self, fmt: str, *args: object) -> None:
            if "/track/control/STATUS" not in str(args[0] if args else ""):
                sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    return Handler


def main() -> int:
    device = os.environ.get("DEVICE", "counter")
    namespace = os.environ.get("DEVICE_NAMESPACE") or _read(f"{SA}/namespace", "default")
    client = DeviceClient(device, namespace, os.environ.get("DEVICE_API_VERSION", "v1alpha2"))
    bind = os.environ.get("BIND", "0.0.0.0")
    port = int(os.environ.get("PORT", "8089"))
    server = ThreadingHTTPServer((bind, port), handler(client, device))
    print(f"web controller for device {namespace}/{device} on http://{bind}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
