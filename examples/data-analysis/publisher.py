"""The data-analysis demo's publisher (upstream: `testmachine` in image ke-testbeam): a simulated
temperature machine publishing one reading every INTERVAL seconds (2) on TOPIC (`test`) of the
node's MQTT broker (BROKER, tcp://127.0.0.1:1883 over the pod's host network).

Readings have the upstream fields and types (Value is a string); the values and machine ids
repeat the upstream publisher's sequence of 20, so some exceed the analysis threshold."""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys
import threading
import time
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

# (Value, MachineID) for ID 0..19, as the upstream publisher sends them, then again
SEQUENCE = [("80", "M7000"), ("90", "M2000"), ("80", "M7000"), ("100", "M3030"),
            ("100", "M3030"), ("80", "M7000"), ("95", "M5050"), ("95", "M5050"),
            ("75", "M6000")] + [("80", "M7000")] * 11


def reading(i: int, now: datetime.datetime) -> dict:
    value, machine = SEQUENCE[i % len(SEQUENCE)]
    return {"ID": i, "Device": "cc2650", "CreateTime": now.isoformat(timespec="milliseconds"),
            "Label": "Temperature", "Units": "DegreeCelcius", "Value": value,
            "MachineID": machine}


def main() -> int:
    broker = urlsplit(os.environ.get("BROKER", "tcp://127.0.0.1:1883"))
    topic = os.environ.get("TOPIC", "test")
    interval = float(os.environ.get("INTERVAL", "2"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"send-client-{os.getpid()}")
    client.reconnect_delay_set(1, 5)
    client.connect_async(broker.hostname or "127.0.0.1", broker.port or 1883)
    client.loop_start()
    print(f"publishing on {topic!r} at {broker.hostname}:{broker.port or 1883} every {interval:g}s",
          flush=True)
    i = 0
    next_at = time.monotonic()
    while not stop.wait(max(0.0, next_at - time.monotonic())):
        next_at += interval
        if not client.is_connected():
            continue  # the broker is not up yet: the reading is not sent, as a sensor would
        data = reading(i, datetime.datetime.now().astimezone())
        client.publish(topic, json.dumps(data), qos=0)
        print(f"sent ID={i} MachineID={data['MachineID']} Value={data['Value']}", flush=True)
        i += 1
    client.disconnect()
    client.loop_stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
