"""The mapper SDK: a mapper is one `Mapper` subclass (read, optional write, an interval); `run`
does MQTT (paho-mqtt), the KubeEdge topics, retries, reconnects and the device's state.

Used by the built-in mappers (dht11, simulated, counter), by `k3py mapper` (k3py.cli.mapper) and
by users' own mappers. `MapperSession` is the I/O-free part (payloads, desired values, health),
unit-tested without a broker; `run` adds the client and the clock."""

from __future__ import annotations

import logging
import queue
import signal
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson

from k3py.mapper import topics as t

__all__ = ["Mapper", "MapperError", "MapperSession", "run", "format_value",
           "UNHEALTHY_AFTER"]

log = logging.getLogger("k3py.mapper")

UNHEALTHY_AFTER = 3  # intervals in a row without one good reading


class MapperError(Exception):
    """A problem the user must fix (no sensor, bad broker URL): one line, exit code 1."""


class Mapper:
    """Subclass this. `properties` are the device's twin names; `read` is called for each of
    them every `interval` seconds; `write` (optional) applies a desired value set in the cloud.

    `read` returns the value (str, int, float or bool) or None for "nothing to report now";
    an exception is retried `retries` times, `retry_delay` apart. `setup` and `close` open and
    release the hardware; raise MapperError in `setup` for a one-line error."""

    properties: Sequence[str] = ()
    types: Mapping[str, str] = {}  # twin metadata.type per property (default "string")
    interval: float = 2.0
    retries: int = 2
    retry_delay: float = 0.2

    def setup(self) -> None:
        """Open the hardware; called once before connecting."""

    def read(self, prop: str) -> Any:
        raise NotImplementedError

    def write(self, prop: str, value: str) -> None:
        raise NotImplementedError(f"{prop} is read-only")

    def close(self) -> None:
        """Release the hardware; called once at exit."""

    @classmethod
    def writable(cls) -> bool:
        return cls.write is not Mapper.write


def format_value(value: Any) -> str:
    """A twin value as KubeEdge carries it: a string (booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class MapperSession:
    """The protocol side of one mapper on one device, no I/O: topics in the form chosen
    (namespace "" = KubeEdge up to v1.16, else v1.17+), payloads, which desired values are
    new (a repeated command is ignored), and the device's health."""

    def __init__(self, mapper: Mapper, device: str, namespace: str = "",
                 wall: Callable[[], float] = time.time) -> None:
        self.mapper = mapper
        self.device = device
        self.namespace = namespace
        self._wall = wall
        self.applied: dict[str, str] = {}
        self.failed_intervals = 0
        self.state = ""

    def topic(self, suffix: str) -> str:
        return t.device_topic(self.namespace, self.device, suffix)

    def subscriptions(self) -> list[str]:
        if not self.mapper.writable():
            return []
        return [self.topic(s) for s in (t.TWIN_UPDATE_DELTA, t.TWIN_UPDATE_DOCUMENT,
                                        t.TWIN_GET_RESULT)]

    def _base(self) -> dict[str, Any]:
        return {"event_id": str(uuid.uuid4()), "timestamp": int(self._wall() * 1000)}

    def twin_update(self, values: Mapping[str, str]) -> bytes:
        twins = {prop: {"actual": {"value": value},
                        "metadata": {"type": self.mapper.types.get(prop, "string")}}
                 for prop, value in values.items()}
        return orjson.dumps({**self._base(), "twin": twins})

    def state_update(self, state: str) -> bytes:
        return orjson.dumps({**self._base(), "state": state})

    def twin_get(self) -> bytes:
        return orjson.dumps(self._base())

    def desired(self, topic: str, payload: bytes) -> dict[str, str]:
        """New desired values in a delta, document or twin/get result for our properties."""
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return {}
        if not isinstance(body, dict):
            return {}
        found: dict[str, Any] = {}
        twins = body.get("twin") if isinstance(body.get("twin"), dict) else {}
        if topic.endswith(t.TWIN_UPDATE_DELTA):
            found = body.get("delta") if isinstance(body.get("delta"), dict) else {}
        elif topic.endswith(t.TWIN_UPDATE_DOCUMENT):
            found = {k: ((v or {}).get("current") or {}).get("expected", {}).get("value")
                     for k, v in twins.items() if isinstance(v, dict)}
        elif topic.endswith(t.TWIN_GET_RESULT):
            found = {k: ((v or {}).get("expected") or {}).get("value")
                     for k, v in twins.items() if isinstance(v, dict)}
        return {k: v for k, v in found.items()
                if k in self.mapper.properties and isinstance(v, str) and v != ""
                and self.applied.get(k) != v}

    def interval_done(self, good_readings: int) -> str | None:
        """After each interval: the state to publish if it changed (online / unhealthy)."""
        if good_readings:
            self.failed_intervals = 0
            new = "online"
        else:
            self.failed_intervals += 1
            new = "unhealthy" if self.failed_intervals >= UNHEALTHY_AFTER else self.state
        if new and new != self.state:
            self.state = new
            return new
        return None


def _broker_address(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url if "://" in url else "tcp://" + url)
    tls = parts.scheme in ("ssl", "tls", "mqtts")
    if parts.scheme not in ("tcp", "mqtt", "ssl", "tls", "mqtts") or not parts.hostname:
        raise MapperError(f"expected a broker URL such as tcp://127.0.0.1:1883, got {url!r}")
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise MapperError(f"bad port in broker URL {url!r}") from None
    return parts.hostname, port, tls


def _read(mapper: Mapper, prop: str, stop: threading.Event) -> Any:
    for attempt in range(mapper.retries + 1):
        try:
            return mapper.read(prop)
        except Exception as e:
            if attempt == mapper.retries:
                raise
            log.debug("reading %s failed (%s); retrying", prop, e)
            if stop.wait(mapper.retry_delay):
                raise
    return None


def run(mapper: Mapper, device: str, *, namespace: str = "",
        broker: str = "tcp://127.0.0.1:1883", username: str = "", password: str = "",
        ca_file: str = "", stop: threading.Event | None = None,
        handle_signals: bool = True) -> int:
    """Run `mapper` for `device` until SIGTERM/SIGINT or `stop` is set; returns the exit code.
    Raises MapperError for what the user must fix (no hardware, bad broker URL)."""
    import paho.mqtt.client as mqtt

    host, port, tls = _broker_address(broker)
    stop = stop or threading.Event()
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    mapper.setup()
    session = MapperSession(mapper, device, namespace)
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    connected = threading.Event()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"k3py-mapper-{device[:20]}-{uuid.uuid4().hex[:6]}",
                         protocol=mqtt.MQTTv311)
    if username:
        client.username_pw_set(username, password or None)
    if tls:
        client.tls_set_context(ssl.create_default_context(cafile=ca_file or None))
    # the broker says "offline" for us if we vanish
    client.will_set(session.topic(t.STATE_UPDATE), session.state_update("offline"), qos=1)
    client.reconnect_delay_set(min_delay=1, max_delay=10)

    def on_connect(c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("broker %s:%d refused the mapper: %s", host, port, reason)
            return
        for topic in session.subscriptions():
            c.subscribe(topic, qos=1)
        c.publish(session.topic(t.STATE_UPDATE), session.state_update(session.state or "online"),
                  qos=1)
        if mapper.writable():
            c.publish(session.topic(t.TWIN_GET), session.twin_get(), qos=1)
        connected.set()
        log.info("connected to %s:%d as device %s", host, port, device)

    def on_disconnect(*_a: Any) -> None:
        if connected.is_set():
            log.warning("lost the broker %s:%d; reconnecting", host, port)
        connected.clear()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_message = lambda _c, _u, m: inbox.put((m.topic, bytes(m.payload)))
    client.connect_async(host, port, keepalive=30)
    client.loop_start()
    pending: dict[str, str] = {}  # read while disconnected: the newest per property
    next_read = time.monotonic()
    try:
        while not stop.is_set():
            try:
                topic, payload = inbox.get(timeout=max(0.0, min(next_read - time.monotonic(),
                                                                0.5)))
            except queue.Empty:
                pass
            else:
                for prop, value in session.desired(topic, payload).items():
                    try:
                        mapper.write(prop, value)
                        session.applied[prop] = value
                        log.info("%s set to %s", prop, value)
                    except Exception as e:
                        log.warning("writing %s=%s failed: %s", prop, value, e)
                continue
            if time.monotonic() < next_read:
                continue
            next_read += mapper.interval
            if next_read < time.monotonic():  # a slow read: do not run to catch up
                next_read = time.monotonic() + mapper.interval
            good = 0
            for prop in mapper.properties:
                try:
                    value = _read(mapper, prop, stop)
                except Exception as e:
                    log.warning("reading %s failed: %s", prop, e)
                    continue
                good += 1
                if value is None:
                    continue
                text = format_value(value)
                if not t.valid_twin_value(text):
                    log.warning("%s=%r is not a valid twin value (letters, digits and "
                                "-_.,:/@# only); not sent", prop, text)
                    continue
                pending[prop] = text
            state = session.interval_done(good)
            if connected.is_set():
                if state:
                    client.publish(session.topic(t.STATE_UPDATE), session.state_update(state),
                                   qos=1)
                if pending:
                    client.publish(session.topic(t.TWIN_UPDATE), session.twin_update(pending),
                                   qos=1)
                    pending = {}
    finally:
        if connected.is_set():
            client.publish(session.topic(t.STATE_UPDATE), session.state_update("offline"),
                           qos=1).wait_for_publish(2)
        client.disconnect()
        client.loop_stop()
        mapper.close()
    return 0
