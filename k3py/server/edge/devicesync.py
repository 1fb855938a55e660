"""Devices down the tunnel: each node receives the KubeEdge Devices bound to it and the
DeviceModels those devices use, so its device twin and mappers work from the agent's cache
(agent/meta.db) while the server is unreachable, as KubeEdge's edge does.

A Device names its node with spec.nodeName (v1beta1) or, in v1alpha1/v1alpha2 manifests, with
a nodeSelector term `{key: "", operator: In, values: [NODE]}` (kubernetes.io/hostname is
accepted as the key too). The CRDs are built in, but the informers start only once their
resources are served, so this feed waits for them in the background."""

from __future__ import annotations

import asyncio
import logging

from k3py.api.objects import name_of, namespace_of

__all__ = ["DEVICE_GROUP", "DeviceFeed", "device_node", "device_model", "edge_view"]

log = logging.getLogger("k3py.cloudhub")

DEVICE_GROUP = "devices.kubeedge.io"
_HOSTNAME_KEYS = ("", "kubernetes.io/hostname")


def device_node(dev: dict | None) -> str:
    """The node a Device is bound to, or "" when it names none."""
    spec = (dev or {}).get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    for term in (spec.get("nodeSelector") or {}).get("nodeSelectorTerms") or []:
        for expr in term.get("matchExpressions") or []:
            values = expr.get("values") or []
            if expr.get("key") in _HOSTNAME_KEYS and expr.get("operator") == "In" and values:
                return str(values[0])
    return ""


_REPORTED_STATUS = ("state", "lastOnlineTime")
_REPORTED_TWIN = ("reported", "observedDesired")


def edge_view(dev: dict) -> dict:
    """A Device without what its node reports (devicestatus.py) and without resourceVersion
    and managedFields: when two versions of a Device have the same view, the node has it."""
    md = {k: v for k, v in (dev.get("metadata") or {}).items()
          if k not in ("resourceVersion", "managedFields")}
    status = {k: v for k, v in (dev.get("status") or {}).items() if k not in _REPORTED_STATUS}
    if isinstance(status.get("twins"), list):
        status["twins"] = [{k: v for k, v in t.items() if k not in _REPORTED_TWIN}
                           if isinstance(t, dict) else t for t in status["twins"]]
    return {**dev, "metadata": md, "status": status}


def device_model(dev: dict | None) -> str:
    return (((dev or {}).get("spec") or {}).get("deviceModelRef") or {}).get("name") or ""


class DeviceFeed:
    """Feeds a CloudHub's node sessions with devices and device models.

    `send(node, plural, etype, obj)` queues a reliable message for a connected node; the hub's
    snapshot for a (re)connecting node includes `snapshot(node)`."""

    def __init__(self, informers, send) -> None:
        self._factory = informers
        self._send = send
        self.devices = None
        self.models = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._start(), name="device-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _start(self) -> None:
        delay = 0.2
        while True:
            try:
                self.devices = self._factory.informer(DEVICE_GROUP, "devices")
                self.models = self._factory.informer(DEVICE_GROUP, "devicemodels")
                break
            except KeyError:  # the built-in CRDs are not established yet
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
        self.devices.add_index("node", lambda d: [device_node(d)] if device_node(d) else [])
        self.devices.add_handler(self._on_device)
        self.models.add_handler(self._on_model)

    def snapshot(self, node: str) -> dict[str, list[dict]]:
        if self.devices is None or self.models is None:
            return {}
        devices = self.devices.by_index("node", node)
        models = []
        for ns, name in sorted({(namespace_of(d), device_model(d)) for d in devices}):
            model = self.models.get(ns, name) if name else None
            if model is not None:
                models.append(model)
        return {"devices": devices, "devicemodels": models}

    def _model_for(self, dev: dict) -> dict | None:
        name = device_model(dev)
        if not name or self.models is None:
            return None
        return self.models.get(namespace_of(dev), name)

    def _on_device(self, etype: str, old: dict | None, new: dict | None) -> None:
        before, after = device_node(old), device_node(new)
        if etype == "MODIFIED" and before == after and old is not None and new is not None \
                and edge_view(old) == edge_view(new):
            return  # only what the edge itself reported changed: nothing new for it
        if before and before != after:
            self._send(before, "devices", "DELETED", old)
        if after and new is not None:
            if etype != "DELETED":
                model = self._model_for(new)
                if model is not None:  # the model first: the twin needs it
                    self._send(after, "devicemodels", "MODIFIED", model)
            self._send(after, "devices", etype, new)

    def _on_model(self, etype: str, old: dict | None, new: dict | None) -> None:
        model = new or old
        if model is None or self.devices is None:
            return
        ns, name = namespace_of(model), name_of(model)
        nodes = {device_node(d) for d in self.devices.list(ns)
                 if device_model(d) == name and device_node(d)}
        for node in sorted(nodes):
            self._send(node, "devicemodels", etype, model)

