"""Device status from the edge: a node's DeviceReport (k3py.tunnel.protocol) written into its
Device's status, as KubeEdge's cloud does: `status.twins[].reported` in every version, plus
`observedDesired`, `state` and `lastOnlineTime` for v1beta1 Devices.

Called by upstream.py for each device status message of a node; `apply_report` is the pure
part (unit-tested). A node may only write the Devices bound to it (devicesync's membership);
anything else is refused (403: logged and dropped, never written)."""

from __future__ import annotations

import logging
from typing import Any

from k3py.api import errors
from k3py.server.edge.devicesync import DEVICE_GROUP, device_model, device_node
from k3py.server.registry import Registry
from k3py.tunnel.protocol import DeviceReport, ReportedValue

__all__ = ["DeviceStatusWriter", "apply_report", "missing_twins", "property_names"]

log = logging.getLogger("k3py.cloudhub")

V1BETA1 = "v1beta1"


def property_names(dev: dict, model: dict | None) -> set[str]:
    """The twins a Device may list: its model's properties, its own spec.properties
    (v1beta1) and propertyVisitors (v1alpha2)."""
    spec = dev.get("spec") or {}
    names = {p.get("name") for p in ((model or {}).get("spec") or {}).get("properties") or []}
    names |= {p.get("name") for p in spec.get("properties") or []}
    names |= {p.get("propertyName") for p in spec.get("propertyVisitors") or []}
    return {n for n in names if isinstance(n, str) and n}


def _property(v: ReportedValue) -> dict[str, Any]:
    # metadata values are strings in KubeEdge's schema (map[string]string)
    return {"value": v.value, "metadata": {"timestamp": str(v.timestamp), "type": v.type}}


def _timestamp(prop: Any) -> int:
    try:
        return int(((prop or {}).get("metadata") or {}).get("timestamp") or 0)
    except (TypeError, ValueError):
        return 0


def missing_twins(dev: dict, report: DeviceReport) -> set[str]:
    """Twins of `report` that the Device's status does not list yet."""
    listed = {t.get("propertyName") for t in (dev.get("status") or {}).get("twins") or []}
    return set(report.twins) - listed


def apply_report(dev: dict, report: DeviceReport, names: set[str], *,
                 v1beta1: bool) -> dict | None:
    """`dev` with the report written into its status, or None when nothing changes. A twin
    the status does not list is added when `names` (property_names) has it, else skipped;
    a reading older than the one shown (a resend, a reordering) never replaces it.
    `v1beta1`: the Device is a v1beta1 object (observedDesired, state, lastOnlineTime)."""
    status = dev.setdefault("status", {}) or {}
    dev["status"] = status
    twins = status.get("twins")
    if not isinstance(twins, list):
        twins = status["twins"] = []
    by_name = {t.get("propertyName"): t for t in twins if isinstance(t, dict)}
    changed = False
    for name, value in report.twins.items():
        twin = by_name.get(name)
        if twin is None:
            if name not in names:
                continue
            twin = by_name[name] = {"propertyName": name}
            twins.append(twin)
            changed = True
        if _timestamp(twin.get("reported")) > value.timestamp:
            continue
        new = _property(value)
        if twin.get("reported") != new:
            twin["reported"] = new
            changed = True
    if v1beta1:
        for name, value in report.desired.items():
            twin = by_name.get(name)
            if twin is not None and twin.get("observedDesired") != _property(value):
                twin["observedDesired"] = _property(value)
                changed = True
        if report.state is not None and status.get("state") != report.state:
            status["state"] = report.state
            changed = True
        if report.last_online and status.get("lastOnlineTime") != report.last_online:
            status["lastOnlineTime"] = report.last_online
            changed = True
    return dev if changed else None


class DeviceStatusWriter:
    """Writes device reports through the Registry (status only, conflicts retried)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def write(self, node: str, namespace: str, name: str, content: Any) -> None:
        try:
            report = DeviceReport.from_content(content)
        except (ValueError, TypeError) as e:
            raise errors.bad_request(f"bad device report for {namespace}/{name}: {e}") from None
        resources = self.registry.resources
        stored = resources.get(DEVICE_GROUP, V1BETA1, "devices")
        if stored is None:
            raise errors.internal_error("devices.kubeedge.io is not served yet")
        # written in the Device's own version: its schema prunes the others' fields (a
        # v1alpha2 Device written through v1beta1 would lose spec.nodeSelector)
        version = await self.registry.stored_api_version(stored, namespace, name)
        if version is None:
            return  # deleted meanwhile
        res = resources.by_api_version_kind(version, "Device") or stored
        v1beta1 = res.version == V1BETA1
        names: set[str] | None = None  # read only when a twin is not listed yet
        need_model = False

        def mutate(cur: dict) -> dict | None:
            nonlocal need_model
            if device_node(cur) != node:
                log.warning("node %s reported status for device %s/%s, which is bound to "
                            "%r: refused", node, namespace, name, device_node(cur) or None)
                raise errors.forbidden(f"node {node} may not write device {namespace}/{name}")
            if names is None and missing_twins(cur, report):
                need_model = True
                return None
            return apply_report(cur, report, names or set(), v1beta1=v1beta1)

        await self.registry.update_with(res, namespace, name, mutate, subresource="status")
        if need_model:
            cur = await self.registry.try_get(res, namespace, name)
            if cur is None:
                return
            model = None
            models = resources.get(DEVICE_GROUP, V1BETA1, "devicemodels")
            if device_model(cur) and models is not None:
                model = await self.registry.try_get(models, namespace, device_model(cur))
            names = property_names(cur, model)
            await self.registry.update_with(res, namespace, name, mutate,
                                            subresource="status")
