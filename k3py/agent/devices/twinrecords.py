"""The device twin's records, with no I/O: twins, devices, reports and what one input caused,
as the twin (twin.py) keeps them and metamanager persists them (`record`/`from_record`).

Built by twin.py, twinobjects.py (from API objects) and read by the coalescer (coalescer.py),
the event bus and the agent's device part (manager.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Version", "TwinValue", "Twin", "Device", "Publish", "Reported", "Report", "Outcome",
           "DeviceKey", "value_message", "DEFAULT_REPORT_CYCLE", "OFFLINE_CYCLES",
           "HISTORY_LIMIT"]

DEFAULT_REPORT_CYCLE = 1.0  # seconds
OFFLINE_CYCLES = 3  # a device whose mapper is silent this many report cycles goes offline
HISTORY_LIMIT = 10  # earlier readings kept per twin in a report not yet sent

DeviceKey = tuple[str, str]  # (namespace, name)


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
            out["expected"] = value_message(self.expected)
        if self.actual is not None:
            out["actual"] = value_message(self.actual)
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


def value_message(v: TwinValue) -> dict[str, Any]:
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

