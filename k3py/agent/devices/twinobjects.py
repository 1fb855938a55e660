"""Device records (twinrecords.py) from the API objects: a Device and its DeviceModel
(devices.kubeedge.io v1alpha2 and v1beta1), with no I/O.

Used by the agent's device part (manager.py) on the Devices metamanager caches; the twin
(twin.py) merges what it builds into the twins it keeps."""

from __future__ import annotations

from typing import Any

from k3py.agent.devices.twinrecords import DEFAULT_REPORT_CYCLE, Device, Twin, TwinValue

__all__ = ["device_from_objects"]

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
