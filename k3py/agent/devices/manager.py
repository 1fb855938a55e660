"""The agent's device part: the node's event bus (eventbus.py) and device twin (twin.py), fed
from metamanager's cached Devices and DeviceModels, with the twin state kept in meta.db.

Started and stopped by k3py.agent.main with the other agent parts. Reports leave as reliable
device status messages (k3py.tunnel.protocol.DeviceReport) through edgehub; while the tunnel is
down they are held, one merged report per device (newest value per twin plus a bounded
history), persisted with the twin, and sent after reconnect in the order they were taken."""

from __future__ import annotations

import asyncio
import logging
import ssl

from k3py.agent.devices.eventbus import BusError, EventBus, ExternalBroker
from k3py.agent.devices.mqttreport import MqttReporter
from k3py.agent.devices.twin import (
    Device,
    DeviceKey,
    DeviceTwins,
    Report,
    Reported,
    device_from_objects,
)
from k3py.agent.edgehub import EdgeHub
from k3py.agent.metamanager import MetaManager
from k3py.aio import cancel_and_wait
from k3py.config import AgentConfig
from k3py.tunnel.message import EDGE, GROUP_RESOURCE, OP_UPDATE, Message, new_message
from k3py.tunnel.protocol import DeviceReport, ReportedValue, device_status_resource

__all__ = ["DeviceManager", "report_message"]

log = logging.getLogger("k3py.devices")

_DEVICE_KINDS = ("devices", "devicemodels", "sync")


def _value(r: Reported) -> ReportedValue:
    return ReportedValue(r.value, r.timestamp, r.type)


def report_message(report: Report, device: Device | None) -> Message:
    """The tunnel message of one device's report; `device` adds the desired values the edge
    holds (v1beta1 observedDesired)."""
    desired = {}
    for key, tw in (device.twins.items() if device is not None else ()):
        if tw.expected is not None and not tw.deleted:
            desired[key] = ReportedValue(tw.expected.value, tw.expected.timestamp, tw.type)
    content = DeviceReport({k: _value(v) for k, v in report.twins.items()},
                           {k: [_value(r) for r in v] for k, v in report.history.items()},
                           desired, report.state, report.last_online)
    return new_message(source=EDGE, group=GROUP_RESOURCE, operation=OP_UPDATE,
                       resource=device_status_resource(report.namespace, report.name),
                       content=content.to_content())


class DeviceManager:
    """Owns the node's DeviceTwins and EventBus; `start` raises BusError (one line naming
    the flag) when the bus cannot run as configured."""

    def __init__(self, config: AgentConfig, node: str, meta: MetaManager, hub: EdgeHub) -> None:
        self.meta = meta
        self.hub = hub
        self.twins = DeviceTwins(node, offline_after=config.device_offline_after or None)
        external = None
        if config.mqtt_mode != "internal":
            if not config.mqtt_server:
                raise BusError(f"--mqtt-mode {config.mqtt_mode} needs --mqtt-server "
                               f"tcp://HOST:PORT (or ssl://HOST:PORT)")
            external = ExternalBroker(config.mqtt_server, config.mqtt_username,
                                      config.mqtt_password, config.mqtt_ca_file,
                                      config.mqtt_cert_file, config.mqtt_key_file)
        self.bus = EventBus(self.twins, mode=config.mqtt_mode, bind=config.mqtt_bind,
                            port=config.mqtt_port, external=external,
                            on_persist=self._persist, on_report=self._report)
        # reports due but not sent yet (tunnel down), oldest data first; persisted with the
        # twin as its `pending` report until queued in the outbox
        self._unsent: dict[DeviceKey, Report] = {}
        self._wake = asyncio.Event()
        self._resync = True
        self._task: asyncio.Task | None = None
        self.mqtt = MqttReporter(self.bus, node, hub)  # the server dashboard's MQTT figures

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        state = self.meta.twin_state()
        # the twins as they were before a restart: actual values, versions, liveness
        self.twins.set_devices([Device.from_record(rec) for rec, _ in state.values()])
        for key, (_, pending) in state.items():
            if pending:
                self._unsent[key] = Report.from_record(pending)
        try:
            await self.bus.start()
        except (OSError, ssl.SSLError, ValueError) as e:
            await self.bus.stop()
            raise BusError(f"the MQTT event bus cannot start (--mqtt-server, --mqtt-ca-file, "
                           f"--mqtt-cert-file, --mqtt-key-file): {e}") from None
        self.meta.listeners.append(self._on_meta)
        self.hub.on_connect.append(self._wake.set)
        self._task = asyncio.create_task(self._run(), name="devices")
        self._wake.set()
        self.mqtt.start()

    async def stop(self) -> None:
        if self._on_meta in self.meta.listeners:
            self.meta.listeners.remove(self._on_meta)
        if self._wake.set in self.hub.on_connect:
            self.hub.on_connect.remove(self._wake.set)
        await self.mqtt.stop()
        await cancel_and_wait(self._task)
        await self.bus.stop()

    def _on_meta(self, what: str) -> None:
        if what in _DEVICE_KINDS:
            self._resync = True
            self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                if self._resync:
                    self._resync = False
                    await self._sync_devices()
                if self.hub.connected.is_set():
                    await self._flush()
            except Exception:  # noqa: BLE001 - the next change or connect tries again
                log.exception("device twin: syncing with the cache failed")

    # ---------------------------------------------------------------- down: Devices

    def _devices_from_cache(self) -> list[Device]:
        out = []
        for obj in self.meta.objects("devices"):
            md = obj.get("metadata") or {}
            ns = md.get("namespace") or "default"
            model_name = ((obj.get("spec") or {}).get("deviceModelRef") or {}).get("name")
            model = self.meta.get("devicemodels", ns, model_name) if model_name else None
            out.append(device_from_objects(obj, model))
        return out

    async def _sync_devices(self) -> None:
        """The twins follow the cached Devices: added, removed, desired values changed
        (document and delta go out)."""
        before = set(self.twins.devices)
        await self.bus.apply(self.twins.set_devices(self._devices_from_cache()))
        gone = [k for k in before if k not in self.twins.devices]
        for key in gone:
            self._unsent.pop(key, None)
            self.bus.coalescer.forget(key)
        await self.meta.delete_twins(gone)

    # ---------------------------------------------------------------- persist, then answer

    def _pending(self, key: DeviceKey) -> Report | None:
        held, waiting = self._unsent.get(key), self.bus.coalescer.pending(key)
        if held is None or waiting is None:
            return held or waiting
        merged = held.copy()
        merged.merge(waiting)
        return merged

    async def _persist(self, devices: list[Device]) -> None:
        """Before the bus answers the mapper: the twin and everything not yet sent for it."""
        rows = []
        for dev in devices:
            pending = self._pending(dev.key)
            rows.append((dev.namespace, dev.name, dev.record(),
                         pending.record() if pending is not None else None))
        await self.meta.save_twins(rows)

    # ---------------------------------------------------------------- up: reports

    async def _report(self, reports: list[Report]) -> None:
        """Coalesced reports, due now: held (merged per device) until the tunnel is up."""
        for report in reports:
            held = self._unsent.get(report.key)
            if held is None:
                self._unsent[report.key] = report
            else:
                held.merge(report)
        if self.hub.connected.is_set():
            await self._flush()

    async def _flush(self) -> None:
        for key in list(self._unsent):
            report = self._unsent.pop(key, None)
            device = self.twins.devices.get(key)
            if report is None or device is None:
                continue
            msg = report_message(report, device)
            try:
                await self.meta.queue_device_report(msg, key)
            except Exception:
                held = self._unsent.get(key)  # keep it, merged under anything newer
                if held is not None:
                    report.merge(held)
                self._unsent[key] = report
                raise
            await self.hub.send(msg, persisted=True)
