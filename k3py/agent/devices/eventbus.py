"""The node's MQTT 3.1.1 event bus: an embedded amqtt broker (127.0.0.1:1883 by default), an
external broker (mosquitto: tcp:// or ssl://, user/password, TLS), or both, as KubeEdge's modes.

Subscribes to the request topics (SUBSCRIPTIONS) on each broker through a paho-mqtt client,
feeds the device twin
(twin.py) and publishes its answers; hands the twin's reports, coalesced, to `on_report` and the
changed devices to `on_persist` (the agent: metamanager, tunnel). Never stops on bad input."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import BrokerError
from amqtt.events import BrokerEvents

from k3py.agent.devices.twin import Device, DeviceTwins, Outcome, Report, ReportCoalescer
from k3py.aio import cancel_and_wait
from k3py.mapper import topics as t
from k3py.tunnel.mqtt import ClientInfo

__all__ = ["EventBus", "BusError", "EmbeddedBroker", "ExternalBroker", "LogLimiter", "MODES",
           "SUBSCRIPTIONS"]

log = logging.getLogger(__name__)

MODES = ("internal", "external", "both")
# only what the twin answers (topics.REQUESTS, both id forms), as upstream's `twin/+`: with
# `$hw/events/#` every result, document and delta the bus publishes came back to it, several
# deliveries per reading that the agent's one event loop paid for and then ignored
SUBSCRIPTIONS = tuple(
    [f"{t.DEVICE_PREFIX}{ident}/{suffix}" for suffix in (t.TWIN_UPDATE, t.TWIN_GET,
                                                         t.STATE_UPDATE)
     for ident in ("+", "+/+")] + [f"{t.NODE_PREFIX}+/{t.MEMBERSHIP_GET}"])
_KUBEEDGE_PREFIX = "$hw/"


class _KubeEdgeBroker(Broker):
    """amqtt's broker, letting clients publish on `$hw/...`.

    amqtt >= 0.11.2 closes the connection of any client that publishes on a topic starting with
    `$` (its reading of MQTT-4.7.2-1, a SHOULD about `$SYS`); KubeEdge's wire format is all
    `$hw/events/...`, and mosquitto allows it. Only `$hw/` is let through; the same steps as
    amqtt's own delivery (plugins, topic filtering, broadcast, retain) are kept."""

    async def _handle_message_delivery(self, client_session: Any, handler: Any,
                                       wait_deliver: asyncio.Future[Any]) -> bool:
        message = wait_deliver.result()
        if message is None or not message.topic.startswith(_KUBEEDGE_PREFIX):
            return await super()._handle_message_delivery(client_session, handler,
                                                          wait_deliver)
        await self.plugins_manager.fire_event(BrokerEvents.MESSAGE_RECEIVED,
                                              client_id=client_session.client_id,
                                              message=message)
        if "#" in message.topic or "+" in message.topic:
            return False  # MQTT-3.3.2-2: no wildcards in a published topic
        if await self._topic_filtering(client_session, topic=message.topic,
                                       action=Action.PUBLISH):
            await self.plugins_manager.fire_event(BrokerEvents.MESSAGE_BROADCAST,
                                                  client_id=client_session.client_id,
                                                  message=message)
            await self._broadcast_message(client_session, message.topic, message.data)
            if message.publish_packet and message.publish_packet.retain_flag:
                await self.retain_message(client_session, message.topic, message.data,
                                          message.qos)
        return True

    def serving(self) -> bool:
        if self.transitions.state != "started":
            return False
        if self._broadcast_task is None or self._broadcast_task.done():
            return False
        servers = [s.instance for s in self._servers.values() if s.instance is not None]
        return bool(servers) and all(s.is_serving() for s in servers)


class BusError(Exception):
    """The bus cannot start as configured; the message is one line naming the flag."""


def _check_bindable(host: str, port: int) -> None:
    """Bind once ourselves: amqtt logs a traceback of its own when its listener cannot."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except OSError as e:
        raise BusError(f"the MQTT broker cannot listen on {host}:{port} (--mqtt-bind): "
                       f"{e.strerror or e}") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise BusError(f"the MQTT broker cannot listen on {host}:{port} (--mqtt-bind/"
                           f"--mqtt-port): {e.strerror or e}") from None


class EmbeddedBroker:
    """The in-process amqtt broker on `host:port`; `supervise` restarts it when it stops
    serving (listener closed, its broadcast loop died)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self.restarts = 0
        self._broker: _KubeEdgeBroker | None = None
        # amqtt's state machine library logs every transition at INFO, its broker every
        # client connection: a mapper reconnecting every few seconds would fill the journal
        logging.getLogger("transitions").setLevel(logging.WARNING)
        logging.getLogger("amqtt.broker").setLevel(logging.WARNING)

    def _config(self) -> dict[str, Any]:
        return {"listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                # no $SYS publisher, no packet logging: this runs on a Pi
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                            {"allow_anonymous": True}}}

    async def start(self) -> None:
        """BusError (one line, naming --mqtt-bind/--mqtt-port) when the address is taken."""
        _check_bindable(self.host, self.port)
        self._broker = _KubeEdgeBroker(self._config())
        try:
            await self._broker.start()
        except BrokerError as e:
            self._broker = None
            raise BusError(f"the MQTT broker cannot listen on {self.host}:{self.port} "
                           f"(--mqtt-bind/--mqtt-port): {e}") from None
        log.info("MQTT broker listening on %s:%d", self.host, self.port)

    def serving(self) -> bool:
        return self._broker is not None and self._broker.serving()

    def clients(self) -> list[ClientInfo]:
        """The clients connected now (the bus's own link among them), oldest first."""
        sessions = self._broker.sessions.items() if self._broker is not None else ()
        out = [ClientInfo(cid, f"{s.remote_address}:{s.remote_port}",
                          float(s.last_connect_time or 0))
               for cid, (s, _) in sessions if s.transitions.state == "connected"]
        return sorted(out, key=lambda c: (c.since, c.client_id))

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            with contextlib.suppress(Exception):
                await broker.shutdown()

    async def restart(self) -> None:
        self.restarts += 1
        log.warning("MQTT broker on %s:%d stopped serving; restarting it (restart %d)",
                    self.host, self.port, self.restarts)
        await self.stop()
        await self.start()

    async def crash_for_test(self) -> None:
        """Close the listener as a crash would (tests of the supervisor)."""
        assert self._broker is not None
        for server in self._broker._servers.values():
            if server.instance is not None:
                server.instance.close()


@dataclass(frozen=True)
class ExternalBroker:
    """An existing broker: `tcp://HOST:PORT` or `ssl://HOST:PORT` (also mqtt://, mqtts://)."""
    url: str
    username: str = ""
    password: str = ""
    ca_file: str = ""  # TLS: CA bundle (system CAs when empty)
    cert_file: str = ""  # TLS client certificate and key
    key_file: str = ""
    insecure: bool = False  # TLS without checking the server's name

    def address(self) -> tuple[str, int, bool]:
        """(host, port, tls); raises ValueError with what to write instead."""
        parts = urlsplit(self.url)
        tls = parts.scheme in ("ssl", "tls", "mqtts")
        if parts.scheme not in ("tcp", "mqtt", "ssl", "tls", "mqtts") or not parts.hostname:
            raise ValueError(f"expected an MQTT broker URL such as tcp://127.0.0.1:1883, "
                             f"got {self.url!r}")
        return parts.hostname, parts.port or (8883 if tls else 1883), tls


class LogLimiter:
    """At most one log line per key per `interval` seconds (a broken mapper repeating a bad
    message every 100 ms must not fill the node's disk)."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}

    def allow(self, key: str, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        self._last[key] = now
        if len(self._last) > 10_000:
            self._last = {k: v for k, v in self._last.items() if now - v < self.interval}
        return True


class _Link:
    """One paho-mqtt client on one broker: subscribes to SUBSCRIPTIONS, hands messages to the
    event loop, reconnects on its own (paho's network thread)."""

    def __init__(self, name: str, host: str, port: int, deliver: Callable[[_Link, str, bytes],
                                                                          None], *,
                 client_id: str, username: str = "", password: str = "",
                 tls: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.host, self.port = host, port
        self.connected = threading.Event()
        self._deliver = deliver
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=mqtt.MQTTv311)
        if username:
            c.username_pw_set(username, password or None)
        if tls is not None:
            c.tls_set_context(tls)
        c.reconnect_delay_set(min_delay=1, max_delay=10)
        c.max_queued_messages_set(10_000)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT %s broker %s:%d refused us: %s", self.name, self.host, self.port,
                        reason)
            return
        client.subscribe([(topic, 1) for topic in SUBSCRIPTIONS])
        self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if self.connected.is_set():
            log.info("MQTT %s broker %s:%d disconnected (%s); reconnecting", self.name,
                     self.host, self.port, reason)
        self.connected.clear()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._deliver(self, msg.topic, bytes(msg.payload))

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _tls_context(ext: ExternalBroker) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ext.ca_file or None)
    if ext.cert_file:
        ctx.load_cert_chain(ext.cert_file, ext.key_file or None)
    if ext.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


Persist = Callable[[list[Device]], Awaitable[None]]
Up = Callable[[list[Report]], Awaitable[None]]


class EventBus:
    """The device side of one node: brokers, the twin, the report coalescer.

    `mode`: internal (embedded broker on bind:port), external (`external` only) or both.
    `on_persist` is awaited before anything is published for a change (KubeEdge's order:
    persist, result, document, delta, up); `on_report` receives the coalesced reports."""

    def __init__(self, twins: DeviceTwins, *, mode: str = "internal", bind: str = "127.0.0.1",
                 port: int = 1883, external: ExternalBroker | None = None,
                 on_persist: Persist | None = None, on_report: Up | None = None,
                 tick: float = 0.1, supervise_every: float = 1.0) -> None:
        if mode not in MODES:
            raise ValueError(f"expected an MQTT mode among {', '.join(MODES)}, got {mode!r}")
        if mode != "internal" and external is None:
            raise ValueError(f"MQTT mode {mode} needs an external broker URL")
        self.twins = twins
        self.mode = mode
        self.broker = EmbeddedBroker(bind, port) if mode != "external" else None
        self.external = external
        self.coalescer = ReportCoalescer()
        self.log_limiter = LogLimiter()
        self._on_persist = on_persist
        self._on_report = on_report
        self._tick = tick
        self._supervise_every = supervise_every
        self._links: list[_Link] = []
        self._queue: asyncio.Queue[tuple[_Link | None, str, bytes]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # each told ("in" | "out" | "error", topic, payload) of what the bus receives and
        # publishes, "error" for an error answer (the MQTT tails and traffic counter)
        self.taps: list[Callable[[str, str, bytes], None]] = []

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # unique: nodes sharing an external broker must not take each other's session
        client_id = f"k3py-{self.twins.node[:10]}-{uuid.uuid4().hex[:6]}"
        if self.broker is not None:
            await self.broker.start()
            connect_host = "127.0.0.1" if self.broker.host in ("0.0.0.0", "") else \
                self.broker.host
            self._links.append(_Link("internal", connect_host, self.broker.port, self._deliver,
                                     client_id=client_id))
        if self.external is not None:
            host, port, tls = self.external.address()
            self._links.append(_Link(
                "external", host, port, self._deliver, client_id=client_id + "x",
                username=self.external.username, password=self.external.password,
                tls=_tls_context(self.external) if tls else None))
        for link in self._links:
            link.start()
        self._tasks = [asyncio.create_task(self._consume(), name="eventbus-consume"),
                       asyncio.create_task(self._timers(), name="eventbus-timers")]

    async def wait_connected(self, timeout: float = 10.0) -> bool:
        """True once every broker link is connected and subscribed (tests, readiness)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(link.connected.is_set() for link in self._links):
                return True
            await asyncio.sleep(0.02)
        return False

    def clients(self) -> list[ClientInfo] | None:
        """The embedded broker's clients; None when there is none (external mode)."""
        return self.broker.clients() if self.broker is not None else None

    async def stop(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []
        for link in self._links:
            await asyncio.to_thread(link.stop)
        self._links = []
        if self.broker is not None:
            await self.broker.stop()

    # ---- in from the brokers

    def _deliver(self, link: _Link, topic: str, payload: bytes) -> None:
        """paho's thread: hand over to the event loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (link, topic, payload))

    async def _consume(self) -> None:
        while True:
            link, topic, payload = await self._queue.get()
            for tap in self.taps:
                tap("in", topic, payload)
            try:
                await self._carry_out(self.twins.handle(topic, payload), link)
            except Exception:  # never stop on one bad message
                if self.log_limiter.allow(f"crash:{topic}", time.monotonic()):
                    log.exception("device event bus: handling %s failed", topic)

    # ---- out: what the twin decided

    async def apply(self, outcome: Outcome) -> None:
        """Carry out an outcome of the twin that is not an answer to a message (the agent's
        set_devices / set_desired calls)."""
        await self._carry_out(outcome, None)

    async def _carry_out(self, out: Outcome, origin: _Link | None) -> None:
        if out.error is not None:
            ident, reason = out.error
            if self.log_limiter.allow(ident, time.monotonic()):
                log.warning("device %s: rejected %s (further rejections logged at most once "
                            "a minute)", ident, reason)
        # into the coalescer first (nothing leaves from there before the next tick), so that
        # what is persisted includes the report not sent yet
        for report in out.reports:
            dev = self.twins.devices.get(report.key)
            self.coalescer.add(report, dev.report_cycle if dev else 1.0)
        if out.persist and self._on_persist is not None:
            devices = [self.twins.devices[k] for k in out.persist if k in self.twins.devices]
            await self._on_persist(devices)
        for msg in out.publish:
            direction = "error" if out.error is not None and msg.reply else "out"
            for tap in self.taps:
                tap(direction, msg.topic, msg.payload)
            targets = [origin] if msg.reply and origin is not None else self._links
            for link in targets:
                link.publish(msg.topic, msg.payload)

    async def _timers(self) -> None:
        last_supervise = time.monotonic()
        while True:
            await asyncio.sleep(self._tick)
            now = time.monotonic()
            try:
                await self._carry_out(self.twins.check_offline(), None)
                due = self.coalescer.due(now)
                if due and self._on_report is not None:
                    await self._on_report(due)
                if self.broker is not None and now - last_supervise >= self._supervise_every:
                    last_supervise = now
                    if not self.broker.serving():
                        await self.broker.restart()
            except Exception:
                if self.log_limiter.allow("timers", now):
                    log.exception("device event bus: periodic work failed")
