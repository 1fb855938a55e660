"""KubeEdge's device twin as bookkeeping with no I/O: MQTT requests in, (topic, payload) answers
and coalesced "report up" records out, with upstream's field names, checks and error form.

Driven by the event bus (eventbus.py: MQTT messages in, publishes out) and the agent's device
part (manager.py: Device objects of this node and desired values from the cloud in; persists
what `Outcome.persist` names in metamanager, then sends `ReportCoalescer` output up the tunnel). Clocks and event ids
are passed in, so every answer is reproducible in tests."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from k3py.mapper import topics as t

__all__ = ["Version", "TwinValue", "Twin", "Device", "Publish", "Reported", "Report", "Outcome",
           "DeviceTwins", "ReportCoalescer", "device_from_objects", "DEFAULT_REPORT_CYCLE",
           "OFFLINE_CYCLES", "HISTORY_LIMIT"]

DEFAULT_REPORT_CYCLE = 1.0  # seconds
OFFLINE_CYCLES = 3  # a device whose mapper is silent this many report cycles goes offline
HISTORY_LIMIT = 10  # earlier readings kept per twin in a report not yet sent

# upstream's reasons (dttype.Error*), so that mappers matching on them keep working
ERR_UNMARSHAL = "Unmarshal update request body failed, please check the request"
ERR_NO_TWIN = "Update twin error, key:twin does not exist"
ERR_KEY = ("The key of twin must only include upper or lowercase letters, number, english, and "
           "special letter - _ . , : / @ # and the length of key should be less than 128 bytes")
ERR_VALUE = ("The value of twin must only include upper or lowercase letters, number, english, "
             "and special letter - _ . , : / @ # and the length of value should be less than "
             "512 bytes")
ERR_NOT_EXIST = "update rejected due to the device is not existed"
ERR_BODY = "the request body is wrong"

DeviceKey = tuple[str, str]  # (namespace, name)


def _value_error(value_type: str, value: str) -> str | None:
    """dtcommon.ValidateValue: None when `value` fits `value_type`, else upstream's reason."""
    if value_type in ("", "string", "deleted"):
        return None
    if value_type in ("int", "integer"):
        try:
            n = int(value, 10)
        except ValueError:
            return "the value is not int or integer"
        return None if -2**63 <= n < 2**63 else "the value is not int or integer"
    if value_type == "float":
        try:
            float(value)
        except ValueError:
            return "the value is not float"
        return None
    if value_type == "boolean":
        return None if value in ("true", "false") else "the bool value must be true or false"
    return "the value type is not allowed"


@dataclass(slots=True)
class Version:
    """Upstream's TwinVersion: bumped by the cloud or the edge; kept here, never published."""
    cloud: int = 0
    edge: int = 0


@dataclass(slots=True)
class TwinValue:
    value: str
    timestamp: int  # ms since the epoch, as upstream's metadata.timestamp


@dataclass(slots=True)
class Twin:
    """One twin (a device property): the desired (expected) and reported (actual) values."""
    type: str = "string"  # metadata.type; "deleted" once an optional twin is set to null
    optional: bool = True
    expected: TwinValue | None = None
    actual: TwinValue | None = None
    expected_version: Version = field(default_factory=Version)
    actual_version: Version = field(default_factory=Version)

    @property
    def deleted(self) -> bool:
        return self.type == "deleted"

    def message(self) -> dict[str, Any]:
        """Upstream's MsgTwin as mappers see it: versions stripped."""
        out: dict[str, Any] = {}
        if self.expected is not None:
            out["expected"] = _value_message(self.expected)
        if self.actual is not None:
            out["actual"] = _value_message(self.actual)
        out["optional"] = self.optional
        out["metadata"] = {"type": self.type}
        return out

    def record(self) -> dict[str, Any]:
        """Everything, versions included: what metamanager persists."""
        out = self.message()
        out["expected_version"] = {"cloud": self.expected_version.cloud,
                                   "edge": self.expected_version.edge}
        out["actual_version"] = {"cloud": self.actual_version.cloud,
                                 "edge": self.actual_version.edge}
        return out

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Twin:
        def value(v: Any) -> TwinValue | None:
            if not v:
                return None
            return TwinValue(v["value"], int((v.get("metadata") or {}).get("timestamp", 0)))

        def version(v: Any) -> Version:
            return Version(int((v or {}).get("cloud", 0)), int((v or {}).get("edge", 0)))
        return cls(type=(rec.get("metadata") or {}).get("type", "string"),
                   optional=bool(rec.get("optional", True)), expected=value(rec.get("expected")),
                   actual=value(rec.get("actual")),
                   expected_version=version(rec.get("expected_version")),
                   actual_version=version(rec.get("actual_version")))


def _value_message(v: TwinValue) -> dict[str, Any]:
    return {"value": v.value, "metadata": {"timestamp": v.timestamp}}


@dataclass(slots=True)
class Device:
    """A device bound to this node, with its twins and the mapper's liveness."""
    namespace: str
    name: str
    twins: dict[str, Twin] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    description: str = ""
    state: str = ""
    last_online: str = ""  # RFC 3339, as status.lastOnlineTime
    report_cycle: float = DEFAULT_REPORT_CYCLE
    offline_after: float | None = None  # seconds; None: OFFLINE_CYCLES x report_cycle
    last_heard: float | None = None  # monotonic time of the mapper's last message
    offline_by_silence: bool = False

    @property
    def key(self) -> DeviceKey:
        return (self.namespace, self.name)

    def summary(self) -> dict[str, Any]:
        """Upstream's dttype.Device as membership/get lists it (id = the device name, as
        upstream up to v1.16; `namespace` added for the v1.17+ topic form)."""
        out: dict[str, Any] = {"id": self.name, "name": self.name, "namespace": self.namespace}
        if self.description:
            out["description"] = self.description
        if self.state:
            out["state"] = self.state
        if self.last_online:
            out["last_online"] = self.last_online
        if self.attributes:
            out["attributes"] = {k: {"value": v, "optional": True,
                                     "metadata": {"type": "string"}}
                                 for k, v in self.attributes.items()}
        return out

    def with_twins(self) -> dict[str, Any]:
        """As membership/updated sends it: twins included, deleted ones as null."""
        out = self.summary()
        out["twin"] = {k: (None if tw.deleted else tw.message()) for k, tw in self.twins.items()}
        return out

    def record(self) -> dict[str, Any]:
        """What metamanager persists; `Device.from_record` reads it back."""
        return {"namespace": self.namespace, "name": self.name, "description": self.description,
                "state": self.state, "last_online": self.last_online,
                "report_cycle": self.report_cycle, "offline_after": self.offline_after,
                "attributes": dict(self.attributes),
                "twins": {k: tw.record() for k, tw in self.twins.items()}}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Device:
        return cls(namespace=rec["namespace"], name=rec["name"],
                   description=rec.get("description", ""), state=rec.get("state", ""),
                   last_online=rec.get("last_online", ""),
                   report_cycle=float(rec.get("report_cycle") or DEFAULT_REPORT_CYCLE),
                   offline_after=rec.get("offline_after"),
                   attributes=dict(rec.get("attributes") or {}),
                   twins={k: Twin.from_record(v) for k, v in (rec.get("twins") or {}).items()})


@dataclass(frozen=True, slots=True)
class Publish:
    """One MQTT message to send. `reply`: only to the broker the request came from (answers);
    otherwise to every broker the bus serves (changes the edge pushes)."""
    topic: str
    payload: bytes
    reply: bool = False


@dataclass(frozen=True, slots=True)
class Reported:
    """A reported value for `status.twins[].reported`."""
    value: str
    timestamp: int  # ms
    type: str


@dataclass(slots=True)
class Report:
    """What goes up to the server for one device: reported values and/or the state.
    `history`: per twin, readings this report replaced (oldest first, at most HISTORY_LIMIT),
    so that readings merged while the server is unreachable are not all lost."""
    namespace: str
    name: str
    twins: dict[str, Reported] = field(default_factory=dict)
    state: str | None = None
    last_online: str | None = None
    history: dict[str, list[Reported]] = field(default_factory=dict)

    @property
    def key(self) -> DeviceKey:
        return (self.namespace, self.name)

    def merge(self, newer: Report) -> None:
        """`newer` on top of this one: its values win, replaced ones go to the history."""
        for key, value in newer.twins.items():
            older = self.twins.get(key)
            hist = [*self.history.get(key, ()), *([older] if older is not None else ()),
                    *newer.history.get(key, ())][-HISTORY_LIMIT:]
            if hist:
                self.history[key] = hist
            self.twins[key] = value
        if newer.state is not None:
            self.state = newer.state
        if newer.last_online is not None:
            self.last_online = newer.last_online

    def copy(self) -> Report:
        return Report(self.namespace, self.name, dict(self.twins), self.state,
                      self.last_online, {k: list(v) for k, v in self.history.items()})

    def record(self) -> dict[str, Any]:
        """What metamanager persists while the report is not sent; `from_record` reads it."""
        def one(r: Reported) -> list[Any]:
            return [r.value, r.timestamp, r.type]
        return {"namespace": self.namespace, "name": self.name, "state": self.state,
                "last_online": self.last_online,
                "twins": {k: one(v) for k, v in self.twins.items()},
                "history": {k: [one(r) for r in v] for k, v in self.history.items()}}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Report:
        def one(v: list[Any]) -> Reported:
            return Reported(str(v[0]), int(v[1]), str(v[2]))
        return cls(rec["namespace"], rec["name"],
                   {k: one(v) for k, v in (rec.get("twins") or {}).items()},
                   rec.get("state"), rec.get("last_online"),
                   {k: [one(x) for x in v] for k, v in (rec.get("history") or {}).items()})


@dataclass(slots=True)
class Outcome:
    """What one input caused, in the order to carry it out: persist the devices named, then
    publish (result, document, delta), then hand the reports to the coalescer.
    `error` is (device or node, reason) of a rejected request, for a rate-limited log line."""
    publish: list[Publish] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    persist: list[DeviceKey] = field(default_factory=list)
    error: tuple[str, str] | None = None

    def extend(self, other: Outcome) -> None:
        self.publish += other.publish
        self.reports += other.reports
        self.persist += [k for k in other.persist if k not in self.persist]
        self.error = self.error or other.error


class _Rejected(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _rfc3339(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
                raise _Rejected(400, ERR_UNMARSHAL)
            event_id = body.get("event_id") if isinstance(body.get("event_id"), str) else ""
            dev = self.find(parsed.namespace, parsed.name)
            if parsed.suffix == t.TWIN_UPDATE:
                if dev is None:
                    raise _Rejected(404, ERR_NOT_EXIST)
                return self._twin_update(dev, reply_topic, event_id, body)
            if parsed.suffix == t.TWIN_GET:
                if dev is None:
                    raise _Rejected(404, f"Device {parsed.name} not found while getting twin")
                twins = {k: tw.message() for k, tw in dev.twins.items() if not tw.deleted}
                return Outcome(publish=[Publish(reply_topic, self._payload(event_id, twin=twins),
                                                reply=True)])
            if dev is None:
                raise _Rejected(404, f"Device {parsed.name} not found")
            return self._state_update(dev, reply_topic, event_id, body)
        except orjson.JSONDecodeError:
            rejected = _Rejected(400, ERR_UNMARSHAL)
        except _Rejected as e:
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

    def _validated(self, dev: Device, body: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
        """The `twin` map of a twin/update, checked as upstream does before anything changes
        (names, value patterns, types from the model); raises _Rejected(400)."""
        twins = body.get("twin")
        if twins is None:
            raise _Rejected(400, ERR_NO_TWIN)
        if not isinstance(twins, dict):
            raise _Rejected(400, ERR_UNMARSHAL)
        for key, msg in twins.items():
            if not t.valid_twin_name(key):
                raise _Rejected(400, ERR_KEY)
            if msg is None:
                if key not in dev.twins:
                    raise _Rejected(400, ERR_BODY)
                continue
            if not isinstance(msg, dict):
                raise _Rejected(400, ERR_UNMARSHAL)
            meta = msg.get("metadata")
            if meta is not None and not (isinstance(meta, dict)
                                         and isinstance(meta.get("type", ""), str)):
                raise _Rejected(400, ERR_UNMARSHAL)
            if "optional" in msg and not isinstance(msg["optional"], bool):
                raise _Rejected(400, ERR_UNMARSHAL)
            twin = dev.twins.get(key)
            msg_type = (meta or {}).get("type") or "string"
            # the model's type rules; a mapper's own metadata.type (upstream demos send
            # "Updated") only counts for a twin it adds or re-adds after a delete
            value_type = msg_type if twin is None or twin.deleted else twin.type
            for side in ("expected", "actual"):
                if side not in msg or msg[side] is None:
                    continue
                part = msg[side]
                if not isinstance(part, dict) or not isinstance(part.get("value"), str):
                    raise _Rejected(400, ERR_UNMARSHAL)
                if not t.valid_twin_value(part["value"]):
                    raise _Rejected(400, ERR_VALUE)
                reason = _value_error(value_type, part["value"])
                if reason:
                    raise _Rejected(400, reason)
        return twins

    def _twin_update(self, dev: Device, reply_topic: str, event_id: str,
                     body: dict[str, Any]) -> Outcome:
        twins = self._validated(dev, body)
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
                changed[side] = _value_message(getattr(twin, side))
                if side == "actual":
                    reported[key] = Reported(part["value"], now, twin.type)
            if msg.get("optional") is False and twin.optional:
                twin.optional = False  # as upstream: a twin may become required, not back
            if not changed and not was_deleted and msg.get("optional") is not False:
                continue
            result[key] = {**changed, "optional": twin.optional,
                           "metadata": {"type": twin.type}}
            document[key] = {"last": last_doc, "current": twin.message()}
        out = self._heard(dev)
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
        dev.last_online = _rfc3339(self._wall())
        return Outcome(reports=[Report(dev.namespace, dev.name, state=dev.state,
                                       last_online=dev.last_online)], persist=[dev.key])

    def _state_update(self, dev: Device, reply_topic: str, event_id: str,
                      body: dict[str, Any]) -> Outcome:
        state = body.get("state")
        if not isinstance(state, str) or state.lower() not in t.STATES:
            raise _Rejected(400, f"state must be one of {', '.join(t.STATES)}")
        dev.last_heard = self._monotonic()
        dev.offline_by_silence = False
        dev.state = state
        if state.lower() in ("online", "ok"):
            dev.last_online = _rfc3339(self._wall())
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


class ReportCoalescer:
    """At most one report per device per report cycle: reports arriving within a cycle are
    merged (newest value per twin wins, nothing that is the latest is dropped). The first
    report after a quiet cycle is due at once, so a slow device is not delayed."""

    def __init__(self) -> None:
        self._pending: dict[DeviceKey, tuple[Report, float]] = {}
        self._last_sent: dict[DeviceKey, float] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, report: Report, cycle: float = DEFAULT_REPORT_CYCLE) -> None:
        entry = self._pending.get(report.key)
        if entry is None:
            self._pending[report.key] = (report.copy(), cycle)
        else:
            entry[0].merge(report)

    def pending(self, key: DeviceKey) -> Report | None:
        """The report waiting for its cycle (not removed), for persisting it meanwhile."""
        entry = self._pending.get(key)
        return entry[0] if entry is not None else None

    def due(self, now: float) -> list[Report]:
        """The reports to send now (removed from the pending set)."""
        out = []
        for key, (report, cycle) in list(self._pending.items()):
            if now >= self._last_sent.get(key, -math.inf) + cycle:
                out.append(report)
                del self._pending[key]
                self._last_sent[key] = now
        return out

    def next_due(self) -> float | None:
        """When the next pending report is due (monotonic time), or None."""
        times = [self._last_sent.get(k, -math.inf) + c for k, (_, c) in self._pending.items()]
        return min(times) if times else None

    def forget(self, key: DeviceKey) -> None:
        self._pending.pop(key, None)
        self._last_sent.pop(key, None)


# ---- from the API objects (devices.kubeedge.io v1alpha2 and v1beta1)

_TYPE_NAMES = {"int": "int", "integer": "int", "float": "float", "double": "float",
               "string": "string", "boolean": "boolean", "bool": "boolean", "bytes": "string"}


def _model_types(model: dict[str, Any] | None) -> dict[str, str]:
    types = {}
    for prop in ((model or {}).get("spec") or {}).get("properties") or []:
        kind = prop.get("type")
        if isinstance(kind, dict):  # v1alpha2: type: {string: {accessMode: ...}}
            kind = next(iter(kind), "string")
        types[prop.get("name", "")] = _TYPE_NAMES.get(str(kind or "string").lower(), "string")
    return types


def device_from_objects(device: dict[str, Any], model: dict[str, Any] | None) -> Device:
    """A Device record from a Device object and its DeviceModel: one twin per model property
    or per twin the device lists, with the desired value (v1alpha2 status.twins[].desired,
    v1beta1 spec.properties[].desired). Twins from the model are not optional."""
    meta = device.get("metadata") or {}
    spec = device.get("spec") or {}
    types = _model_types(model)
    twins = {name: Twin(type=kind, optional=False) for name, kind in types.items() if name}
    desired: dict[str, Any] = {}
    for tw in (device.get("status") or {}).get("twins") or []:  # v1alpha2
        if tw.get("propertyName"):
            desired[tw["propertyName"]] = tw.get("desired") or {}
    cycles = []
    for prop in spec.get("properties") or []:  # v1beta1
        if prop.get("name"):
            desired[prop["name"]] = prop.get("desired") or {}
            if prop.get("reportCycle"):
                cycles.append(float(prop["reportCycle"]) / 1000)
    for name, want in desired.items():
        twin = twins.setdefault(name, Twin(optional=False))
        kind = (want.get("metadata") or {}).get("type")
        if name not in types and isinstance(kind, str):
            twin.type = _TYPE_NAMES.get(kind.lower(), "string")
        value = want.get("value")
        if isinstance(value, str) and value != "":
            twin.expected = TwinValue(value, int((want.get("metadata") or {})
                                                 .get("timestamp", 0) or 0))
    return Device(namespace=meta.get("namespace") or "default", name=meta.get("name", ""),
                  twins=twins, description=(meta.get("labels") or {}).get("description", ""),
                  report_cycle=min(cycles) if cycles else DEFAULT_REPORT_CYCLE)
