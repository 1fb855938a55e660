"""The data-analysis demo's analysis (upstream: the Apache Beam pipeline `livedata`, run as
`livedata --input <broker>:1883 --topic test`): reads the readings from the node's broker,
groups them in fixed windows of WINDOW seconds (10), and when a window closes prints each
reading above THRESHOLD (90) and publishes a high-temperature alert for it on ALERT_TOPIC
(`alert`). Output is read with `kubectl logs <pod> -c analysis`.

Configuration: env BROKER (tcp://127.0.0.1:1883), TOPIC, ALERT_TOPIC, THRESHOLD, WINDOW; the
upstream flags --input HOST:PORT and --topic NAME override BROKER and TOPIC."""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import queue
import signal
import sys
import threading
import time
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt


def window_of(t: float, size: float) -> tuple[float, float]:
    """The fixed window [start, end) holding time t (windows aligned on the epoch, as Beam's
    FixedWindows)."""
    start = math.floor(t / size) * size
    return start, start + size


def above(readings: list[dict], threshold: float) -> list[dict]:
    """The readings whose Value (a string, as the publisher sends it) exceeds threshold."""
    high = []
    for r in readings:
        try:
            if float(r.get("Value", "")) > threshold:
                high.append(r)
        except (TypeError, ValueError):
            continue
    return high


def _stamp(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", help="broker HOST:PORT (default from BROKER)")
    parser.add_argument("--topic", default=os.environ.get("TOPIC", "test"))
    args = parser.parse_args(argv)
    broker = urlsplit("tcp://" + args.input if args.input else
                      os.environ.get("BROKER", "tcp://127.0.0.1:1883"))
    alert_topic = os.environ.get("ALERT_TOPIC", "alert")
    threshold = float(os.environ.get("THRESHOLD", "90"))
    size = float(os.environ.get("WINDOW", "10"))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    inbox: queue.Queue[tuple[float, bytes]] = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"receive-client-{os.getpid()}")

    def on_connect(c, _u, _f, reason, _p) -> None:
        if not reason.is_failure:
            c.subscribe(args.topic, qos=0)
            print(f"reading {args.topic!r} at {broker.hostname}:{broker.port or 1883}; windows "
                  f"of {size:g}s, alert above {threshold:g} on {alert_topic!r}", flush=True)

    client.on_connect = on_connect
    client.on_message = lambda _c, _u, m: inbox.put((time.time(), bytes(m.payload)))
    client.reconnect_delay_set(1, 5)
    client.connect_async(broker.hostname or "127.0.0.1", broker.port or 1883)
    client.loop_start()

    window = window_of(time.time(), size)
    readings: list[dict] = []
    while not stop.is_set():
        try:
            arrived, payload = inbox.get(timeout=max(0.0, min(window[1] - time.time(), 0.5)))
        except queue.Empty:
            arrived, payload = time.time(), b""
        if arrived >= window[1]:  # the window closed: filter it
            high = above(readings, threshold)
            print(f"window {_stamp(window[0])} .. {_stamp(window[1])}: {len(readings)} "
                  f"readings, {len(high)} above {threshold:g}", flush=True)
            for r in high:
                alert = {"Alert": "HighTemperature", "Threshold": threshold,
                         "WindowStart": _stamp(window[0]), "WindowEnd": _stamp(window[1]),
                         **{k: r.get(k) for k in ("ID", "Device", "MachineID", "Value",
                                                  "Units", "CreateTime")}}
                print(f"ALERT: machine {r.get('MachineID')} temperature {r.get('Value')} "
                      f"{r.get('Units', '')} > {threshold:g} (reading {r.get('ID')})",
                      flush=True)
                client.publish(alert_topic, json.dumps(alert), qos=0)
            window, readings = window_of(arrived, size), []
        if payload:
            try:
                reading = json.loads(payload)
            except ValueError:
                print(f"skipped a payload that is not JSON: {payload[:80]!r}", flush=True)
                continue
            if isinstance(reading, dict):
                readings.append(reading)
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
