"""GET of metrics.k8s.io/v1beta1 nodes and pods, answered as metrics-server does: from the
UsageStore, for the Nodes and Pods the shared informers hold (their labels select; a node or
pod without fresh metrics is left out of a list and is NotFound by name).

Plugged into the ApiServer's read-only resources by k3py.server.metrics.install; the
apiserver authorizes, wraps lists and prints tables."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from k3py.api import errors
from k3py.api.kinds import metrics as kinds
from k3py.api.selectors import SelectorError, parse_field_selector, parse_label_selector
from k3py.server.metrics.store import UsageStore

if TYPE_CHECKING:
    from k3py.server.apiserver.paths import ResourcePath
    from k3py.server.controllers.base import InformerFactory

__all__ = ["MetricsAPI"]


class MetricsAPI:
    def __init__(self, store: UsageStore, informers: InformerFactory) -> None:
        self.store = store
        self.informers = informers

    def answer(self, rp: ResourcePath, query: Mapping[str, str]) -> dict | list[dict]:
        """The object named by `rp`, or the items of its list."""
        assert rp.resource is not None
        pods = rp.resource.plural == "pods"
        source = self.informers.informer("", "pods" if pods else "nodes")
        build = self._pod if pods else self._node
        now = time.time()
        if rp.name is not None:
            obj = source.get(rp.namespace if pods else None, rp.name)
            out = build(obj, now) if obj is not None else None
            if out is None:  # metrics-server names a pod namespace/name here
                raise errors.not_found(kinds.GROUP, rp.resource.plural,
                                       f"{rp.namespace}/{rp.name}" if pods else rp.name)
            return out
        try:
            labels = parse_label_selector(query.get("labelSelector", ""))
        except SelectorError as e:
            raise errors.bad_request(str(e)) from None
        fields = parse_field_selector(query.get("fieldSelector", ""))
        items = []
        for obj in sorted(source.list(rp.namespace if pods else None), key=_sort_key):
            if labels.matches((obj.get("metadata") or {}).get("labels")) and \
                    fields.matches(obj):
                out = build(obj, now)
                if out is not None:
                    items.append(out)
        return items

    def _node(self, node: dict, now: float) -> dict | None:
        report = self.store.node(node["metadata"]["name"])
        if report is None:
            return None
        return kinds.node_metrics(node, report.timestamp, report.window, report.node.cpu,
                                  report.node.memory, now)

    def _pod(self, pod: dict, now: float) -> dict | None:
        """metrics-server leaves out a pod that is not running or lacks a container's
        metrics (a half-measured pod would mislead kubectl top and the HPA alike)."""
        if (pod.get("status") or {}).get("phase") != "Running":
            return None
        sample = self.store.pod(pod["metadata"].get("uid") or "")
        if sample is None:
            return None
        containers = []
        for c in (pod.get("spec") or {}).get("containers") or []:
            u = sample.usage.containers.get(c.get("name"))
            if u is None:
                return None
            containers.append((c["name"], u.cpu, u.memory))
        return kinds.pod_metrics(pod, sample.timestamp, sample.window, containers, now)


def _sort_key(obj: dict) -> tuple[str, str]:
    md = obj.get("metadata") or {}
    return md.get("namespace") or "", md.get("name") or ""
