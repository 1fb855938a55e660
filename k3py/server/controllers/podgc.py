"""PodGCController: force-deletes (grace 0) the pods no node will ever stop, as upstream's pod
GC does: pods bound to a Node that no longer exists, and terminating pods never scheduled.

A pod bound to a node is deleted gracefully (registry._graceful): it stays Terminating until
its node confirms. When the Node object is gone nothing will confirm, so after a quarantine
(40 s upstream: a Node re-registering meanwhile keeps its pods) the pod goes here."""

from __future__ import annotations

import logging
import time

from k3py.api import errors
from k3py.server.controllers.base import (
    NODE_INDEX,
    Controller,
    ControllerContext,
    object_key,
    pod_node,
    split_key,
)

__all__ = ["PodGCController", "QUARANTINE"]

log = logging.getLogger("k3py.controllers.podgc")

QUARANTINE = 40.0  # seconds a pod's node must stay missing before the pod is force-deleted


class PodGCController(Controller):
    name = "pod-garbage-collector"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.quarantine = float(ctx.extra.get("pod_gc_quarantine", QUARANTINE))
        # pod key -> when its node was first seen missing
        self._orphaned_since: dict[str, float] = {}

    def setup(self) -> None:
        self.nodes = self.ctx.informers.informer("", "nodes")
        self.pods = self.ctx.informers.informer("", "pods")
        self.pods.add_index(NODE_INDEX, pod_node)
        self.pods.add_handler(self._on_pod)
        self.nodes.add_handler(self._on_node)

    def _on_pod(self, etype: str, old: dict | None, new: dict | None) -> None:
        if new is None or etype == "DELETED":
            if old is not None:
                self._orphaned_since.pop(object_key(old), None)
            return
        if self._collectable(new):
            self.enqueue(object_key(new))

    def _on_node(self, etype: str, old: dict | None, new: dict | None) -> None:
        if etype == "DELETED" and old is not None:
            for pod in self.pods.by_index(NODE_INDEX, old["metadata"]["name"]):
                self.enqueue(object_key(pod))

    def _collectable(self, pod: dict) -> bool:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            return bool(pod["metadata"].get("deletionTimestamp"))
        # before the nodes are listed, reconcile decides (after the quarantine, from the store)
        return not self.nodes.synced.is_set() or self.nodes.get(None, node) is None

    async def reconcile(self, key: str) -> None:
        ns, name = split_key(key)
        pod = self.pods.get(ns, name)
        if pod is None or not self._collectable(pod):
            self._orphaned_since.pop(key, None)
            return
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            since = self._orphaned_since.setdefault(key, time.monotonic())
            left = self.quarantine - (time.monotonic() - since)
            if left > 0:
                self.enqueue(key, after=left + 0.1)
                return
            if await self.registry.try_get(self.ctx.resource("", "nodes"), None, node):
                self._orphaned_since.pop(key, None)  # the cache was behind: the node is back
                return
            log.info("pod %s: node %s no longer exists; deleting the pod", key, node)
        else:
            log.info("pod %s: terminating and never scheduled; deleting it", key)
        self._orphaned_since.pop(key, None)
        try:
            await self.registry.delete(self.ctx.resource("", "pods"), ns, name, {
                "gracePeriodSeconds": 0, "preconditions": {"uid": pod["metadata"]["uid"]}})
        except errors.StatusError as e:
            if e.code not in (404, 409):  # gone already, or another pod of that name now
                raise
