"""KubeEdge's device twin as bookkeeping with no I/O: MQTT requests in, (topic, payload) answers
and "report up" records out, with upstream's field names, checks and error form.

Driven by the event bus (eventbus.py: MQTT messages in, publishes out) and the agent's device
part (manager.py: Device objects of this node and desired values from the cloud in; persists
what `Outcome.persist` names in metamanager, then sends `ReportCoalescer` output up the tunnel).
The records are twinrecords.py's, the checks of a twin/update twinrules.py's; the names other
code imports from here (records, reasons, coalescer.py's ReportCoalescer, twinobjects.py's
device_from_objects) stay importable from here. Clocks and event ids are passed in, so every
answer is reproducible in tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from k3py.agent.devices.coalescer import ReportCoalescer
from k3py.agent.devices.twinobjects import device_from_objects
from k3py.agent.devices.twinrecords import (
    DEFAULT_REPORT_CYCLE,
    HISTORY_LIMIT,
    OFFLINE_CYCLES,
    Device,
    DeviceKey,
    Outcome,
    Publish,
    Report,
    Reported,
    Twin,
    TwinValue,
    Version,
    value_message,
)
from k3py.agent.devices.twinrules import (  # noqa: F401 (all of upstream's reasons, kept here)
    ERR_BODY,
    ERR_KEY,
    ERR_NO_TWIN,
    ERR_NOT_EXIST,
    ERR_UNMARSHAL,
    ERR_VALUE,
    Rejected,
    validated_twins,
)
from k3py.agent.lifecycle import rfc3339
from k3py.mapper import topics as t

__all__ = ["Version", "TwinValue", "Twin", "Device", "Publish", "Reported", "Report", "Outcome",
           "DeviceTwins", "ReportCoalescer", "device_from_objects", "DEFAULT_REPORT_CYCLE",
           "OFFLINE_CYCLES", "HISTORY_LIMIT"]


class DeviceTwins:
    """The twins of the devices bound to one node, and what the KubeEdge topics do to them."""

    def __init__(self, node: str, *, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
                 offline_after: float | None = None) -> None:
        self.node = node
        self.devices: dict[DeviceKey, Device] = {}
        self._wall = wall
        self._monotonic = monotonic
        self._new_id = new_id
        self.offline_after = offline_after  # --device-offline-after; None: 3 x report cycle

    # ---- lookups and message building

    def _now_ms(self) -> int:
        return int(self._wall() * 1000)

    def find(self, namespace: str, name: str) -> Device | None:
        """A device by (namespace, name); namespace "" (the legacy topic form) finds the one
        device of that name, or the one in "default" when several namespaces have one."""
        if namespace:
            return self.devices.get((namespace, name))
        same = [d for d in self.devices.values() if d.name == name]
        if len(same) == 1:
            return same[0]
        return self.devices.get(("default", name))

    def _payload(self, event_id: str | None = None, **body: Any) -> bytes:
        base = {"event_id": self._new_id() if event_id is None else event_id,
                "timestamp": self._now_ms()}
        return orjson.dumps({**base, **body})

    def _error(self, event_id: str, code: int, reason: str) -> bytes:
        return self._payload(event_id, code=code, reason=reason)

    def _both_forms(self, dev: Device, suffix: str, payload: bytes) -> list[Publish]:
        return [Publish(t.device_topic(dev.namespace, dev.name, suffix), payload),
                Publish(t.device_topic("", dev.name, suffix), payload)]

    def _delta(self, dev: Device) -> list[Publish]:
        """twin/update/delta: every twin with a desired value, and `delta` for those whose
        reported value differs; nothing when no desired value is pending."""
        twins: dict[str, Any] = {}
        delta: dict[str, str] = {}
        for key, tw in dev.twins.items():
            if tw.deleted or tw.expected is None or tw.expected.value == "":
                continue
            if tw.actual is None or tw.actual.value != tw.expected.value:
                delta[key] = tw.expected.value
            twins[key] = tw.message()
        if not delta:
            return []
        return self._both_forms(dev, t.TWIN_UPDATE_DELTA,
                                self._payload(twin=twins, delta=delta))

    # ---- MQTT requests

    def handle(self, topic: str, payload: bytes) -> Outcome:
        """One message seen on the bus. Answers and our own outputs are ignored; a request
        that cannot be served is answered on its result topic with upstream's error form."""
        parsed = t.parse_topic(topic)
        if parsed is None or parsed.suffix not in t.REQUESTS:
            return Outcome()
        if isinstance(parsed, t.NodeTopic):
            if parsed.node != self.node:
                return Outcome()  # another node's, on a shared external broker
            return self._membership_get(payload)
        result_suffix = {t.TWIN_UPDATE: t.TWIN_UPDATE_RESULT, t.TWIN_GET: t.TWIN_GET_RESULT,
                         t.STATE_UPDATE: t.STATE_UPDATE_RESULT}[parsed.suffix]
        reply_topic = t.device_topic(parsed.namespace, parsed.name, result_suffix)
        ident = f"{parsed.namespace}/{parsed.name}" if parsed.namespace else parsed.name
        event_id = ""
        try:
            body = orjson.loads(payload)
            if not isinstance(body, dict):
                raise Rejected(400, ERR_UNMARSHAL)
            event_id = body.get("event_id") if isinstance(body.get("event_id"), str) else ""
            dev = self.find(parsed.namespace, parsed.name)
            if parsed.suffix == t.TWIN_UPDATE:
                if dev is None:
                    raise Rejected(404, ERR_NOT_EXIST)
                return self._twin_update(dev, reply_topic, event_id, body)
            if parsed.suffix == t.TWIN_GET:
                if dev is None:
                    raise Rejected(404, f"Device {parsed.name} not found while getting twin")
                twins = {k: tw.message() for k, tw in dev.twins.items() if not tw.deleted}
                return Outcome(publish=[Publish(reply_topic, self._payload(event_id, twin=twins),
                                                reply=True)])
            if dev is None:
                raise Rejected(404, f"Device {parsed.name} not found")
            return self._state_update(dev, reply_topic, event_id, body)
        except orjson.JSONDecodeError:
            rejected = Rejected(400, ERR_UNMARSHAL)
        except Rejected as e:
            rejected = e
        return Outcome(publish=[Publish(reply_topic, self._error(event_id, rejected.code,
                                                                 rejected.reason), reply=True)],
                       error=(ident, f"{topic}: {rejected.code} {rejected.reason}"))

    def _membership_get(self, payload: bytes) -> Outcome:
        topic = t.node_topic(self.node, t.MEMBERSHIP_GET_RESULT)
        try:
            body = orjson.loads(payload)
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return Outcome(publish=[Publish(topic, self._error("", 400, ERR_UNMARSHAL), True)],
                           error=(self.node, f"{topic}: 400 {ERR_UNMARSHAL}"))
        event_id = body.get("event_id") if isinstance(body.get("event_id"), str) else ""
        devices = [d.summary() for d in sorted(self.devices.values(), key=lambda d: d.key)]
        return Outcome(publish=[Publish(topic, self._payload(event_id, devices=devices), True)])

    def _twin_update(self, dev: Device, reply_topic: str, event_id: str,
                     body: dict[str, Any]) -> Outcome:
        twins = validated_twins(dev, body)
        now = self._now_ms()
        result: dict[str, Any] = {}
        document: dict[str, Any] = {}
        reported: dict[str, Reported] = {}
        for key, msg in twins.items():
            twin = dev.twins.get(key)
            if msg is None:
                assert twin is not None  # checked by _validated
                if not twin.optional or twin.deleted:
                    continue  # as upstream: only an optional twin is deleted
                last = twin.message()
                for side in ("expected", "actual"):
                    if getattr(twin, side) is not None:
                        getattr(twin, side + "_version").edge += 1
                        setattr(twin, side, None)
                twin.type = "deleted"
                result[key] = None
                document[key] = {"last": last, "current": None}
                continue
            was_deleted = twin is None or twin.deleted
            last_doc = None if was_deleted else twin.message()  # type: ignore[union-attr]
            if twin is None:
                twin = dev.twins[key] = Twin(optional=msg.get("optional", True))
            changed: dict[str, Any] = {}
            if was_deleted:
                twin.type = ((msg.get("metadata") or {}).get("type")) or "string"
            for side in ("expected", "actual"):
                part = msg.get(side)
                if part is None:
                    continue
                setattr(twin, side, TwinValue(part["value"], now))
                getattr(twin, side + "_version").edge += 1
                changed[side] = value_message(getattr(twin, side))
                if side == "actual":
                    reported[key] = Reported(part["value"], now, twin.type)
            if msg.get("optional") is False and twin.optional:
                twin.optional = False  # as upstream: a twin may become required, not back
            if not changed and not was_deleted and msg.get("optional") is not False:
                continue
            result[key] = {**changed, "optional": twin.optional,
                           "metadata": {"type": twin.type}}
            document[key] = {"last": last_doc, "current": twin.message()}
        out = self._heard(dev)  # persists dev already when it was offline for silence
        if dev.key not in out.persist:
            out.persist.insert(0, dev.key)
        out.publish.insert(0, Publish(reply_topic, self._payload(event_id, twin=result),
                                      reply=True))
        if document:
            out.publish[1:1] = self._both_forms(dev, t.TWIN_UPDATE_DOCUMENT,
                                                self._payload(event_id, twin=document))
            out.publish += self._delta(dev)
        if reported:
            if out.reports:
                out.reports[0].twins.update(reported)
            else:
                out.reports.append(Report(dev.namespace, dev.name, reported))
        return out

    def _heard(self, dev: Device) -> Outcome:
        """The mapper spoke: a device we marked offline for its silence is online again."""
        dev.last_heard = self._monotonic()
        if not dev.offline_by_silence:
            return Outcome()
        dev.offline_by_silence = False
        dev.state = "online"
        dev.last_online = rfc3339(self._wall())
        return Outcome(reports=[Report(dev.namespace, dev.name, state=dev.state,
                                       last_online=dev.last_online)], persist=[dev.key])

    def _state_update(self, dev: Device, reply_topic: str, event_id: str,
                      body: dict[str, Any]) -> Outcome:
        state = body.get("state")
        if not isinstance(state, str) or state.lower() not in t.STATES:
            raise Rejected(400, f"state must be one of {', '.join(t.STATES)}")
        dev.last_heard = self._monotonic()
        dev.offline_by_silence = False
        dev.state = state
        if state.lower() in ("online", "ok"):
            dev.last_online = rfc3339(self._wall())
        device = {"name": dev.name, "state": dev.state}
        if dev.last_online:
            device["lastOnlineTime"] = dev.last_online
        return Outcome(publish=[Publish(reply_topic, self._payload(event_id, device=device),
                                        reply=True)],
                       reports=[Report(dev.namespace, dev.name, state=dev.state,
                                       last_online=dev.last_online or None)],
                       persist=[dev.key])

    # ---- from the cloud (through the agent)

    def set_devices(self, devices: Iterable[Device]) -> Outcome:
        """The devices bound to this node now (from metamanager or the server). Twin values
        already known are kept; new desired values go out as document and delta; added and
        removed devices go out on membership/updated; changed attributes on `{id}/updated`."""
        incoming = {d.key: d for d in devices}
        out = Outcome()
        added = [d for k, d in incoming.items() if k not in self.devices]
        removed = [d for k, d in self.devices.items() if k not in incoming]
        for key in [d.key for d in removed]:
            del self.devices[key]
        for dev in added:
            self.devices[dev.key] = dev
            out.persist.append(dev.key)
        for key, new in incoming.items():
            old = self.devices[key]
            if old is new:
                continue
            out.extend(self._merge(old, new))
        if added or removed:
            payload = self._payload(added_devices=[d.with_twins() for d in added],
                                    removed_devices=[d.with_twins() for d in removed])
            out.publish.append(Publish(t.node_topic(self.node, t.MEMBERSHIP_UPDATED), payload))
        for dev in added:
            out.publish += self._delta(dev)
        return out

    def _merge(self, dev: Device, new: Device) -> Outcome:
        out = Outcome()
        dev.description, dev.report_cycle = new.description, new.report_cycle
        dev.offline_after = new.offline_after
        if new.attributes != dev.attributes:
            dev.attributes = dict(new.attributes)
            attrs = {k: {"value": v, "optional": True, "metadata": {"type": "string"}}
                     for k, v in dev.attributes.items()}
            out.publish += self._both_forms(dev, t.DEVICE_UPDATED,
                                            self._payload(attributes=attrs))
        desired: dict[str, str | None] = {}
        for key, tw in new.twins.items():
            mine = dev.twins.get(key)
            if mine is None:
                dev.twins[key] = tw
                continue
            if not mine.deleted:
                mine.type = tw.type
            mine.optional = tw.optional
            new_value = tw.expected.value if tw.expected else None
            if new_value != (mine.expected.value if mine.expected else None):
                desired[key] = new_value
        out.persist.append(dev.key)
        if desired:
            out.extend(self.set_desired(dev.namespace, dev.name, desired))
        return out

    def set_desired(self, namespace: str, name: str, values: dict[str, str | None]) -> Outcome:
        """Desired values set in the cloud (None clears one): document and delta, both forms."""
        dev = self.devices.get((namespace, name))
        if dev is None:
            return Outcome()
        now = self._now_ms()
        document: dict[str, Any] = {}
        for key, value in values.items():
            twin = dev.twins.setdefault(key, Twin())
            last = None if twin.deleted else twin.message()
            twin.expected = None if value is None else TwinValue(value, now)
            twin.expected_version.cloud += 1
            if twin.deleted and value is not None:
                twin.type = "string"
            document[key] = {"last": last, "current": twin.message()}
        # an empty report: the agent sends up the desired values the edge now holds
        # (v1beta1 status.twins[].observedDesired)
        out = Outcome(persist=[dev.key], reports=[Report(dev.namespace, dev.name)])
        if document:
            out.publish += self._both_forms(dev, t.TWIN_UPDATE_DOCUMENT,
                                            self._payload(twin=document))
            out.publish += self._delta(dev)
        return out

    # ---- time

    def check_offline(self) -> Outcome:
        """Devices whose mapper has been silent for their offline time go `offline` (upstream
        leaves them online forever). Call about once a report cycle."""
        now = self._monotonic()
        out = Outcome()
        for dev in self.devices.values():
            if dev.last_heard is None or dev.offline_by_silence or dev.state == "offline":
                continue
            after = dev.offline_after or self.offline_after or OFFLINE_CYCLES * dev.report_cycle
            if now - dev.last_heard >= after:
                dev.state = "offline"
                dev.offline_by_silence = True
                out.reports.append(Report(dev.namespace, dev.name, state="offline"))
                out.persist.append(dev.key)
        return out
