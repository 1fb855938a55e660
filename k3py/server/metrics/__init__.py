"""metrics-server inside k3py: the nodes' usage reports kept in memory (UsageStore) and
served as metrics.k8s.io/v1beta1 (MetricsAPI), unless --disable metrics-server.

`install` is called by k3py.server.bootstrap; the node tunnel (edge/upstream.py) records
reports into the store, the API and the HPA controller read it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from k3py.api.resources import METRICS_RESOURCES
from k3py.server.metrics.api import MetricsAPI
from k3py.server.metrics.store import PodSample, UsageStore

if TYPE_CHECKING:
    from k3py.server.apiserver.app import ApiServer
    from k3py.server.controllers.base import InformerFactory

__all__ = ["ADDON", "UsageStore", "PodSample", "MetricsAPI", "install"]

ADDON = "metrics-server"  # its --disable name, as K3s's


def install(api: ApiServer, informers: InformerFactory, disabled: bool) -> UsageStore | None:
    """Serve metrics.k8s.io (listed in discovery; the APIService controller then registers
    v1beta1.metrics.k8s.io) from a new UsageStore; None when disabled."""
    if disabled:
        return None
    store = UsageStore()
    metrics = MetricsAPI(store, informers)
    for res in METRICS_RESOURCES:
        api.resources.add(res)
        api.read_only[(res.group, res.plural)] = metrics.answer
    return store
