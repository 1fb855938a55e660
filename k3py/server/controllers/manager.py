"""Starts the built-in controllers and the scheduler on a shared ControllerContext.

The one readable list of what runs inside `k3py server`, in three groups: what every server
runs, what runs under the kube-controller-manager Lease and what under the kube-scheduler Lease
(k3py.server.leaderelection: one server at a time). Order matters only for readability."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import Callable
from typing import Any

from k3py.server.controllers.base import (
    Controller,
    ControllerContext,
    Handler,
    Informer,
    record_handlers,
)

__all__ = ["CONTROLLERS", "EVERY_SERVER", "SCHEDULER", "ControllerGroup",
           "start_controllers", "start_group"]

log = logging.getLogger("k3py.controllers")

# (module, class) pairs; each class is a Controller subclass taking a ControllerContext.
# kube-controller-manager's share:
CONTROLLERS: tuple[tuple[str, str], ...] = (
    ("k3py.server.controllers.namespace", "NamespaceController"),
    ("k3py.server.controllers.serviceaccount", "ServiceAccountController"),
    ("k3py.server.controllers.rootca", "RootCAController"),
    ("k3py.server.controllers.gc", "GarbageCollector"),
    ("k3py.server.controllers.deployment", "DeploymentController"),
    ("k3py.server.controllers.replicaset", "ReplicaSetController"),
    ("k3py.server.controllers.daemonset", "DaemonSetController"),
    ("k3py.server.controllers.statefulset", "StatefulSetController"),
    ("k3py.server.controllers.job", "JobController"),
    ("k3py.server.controllers.cronjob", "CronJobController"),
    ("k3py.server.controllers.endpoints", "EndpointsController"),
    ("k3py.server.controllers.endpointslice", "EndpointSliceController"),
    ("k3py.server.controllers.node", "NodeLifecycleController"),
    ("k3py.server.controllers.nodeipam", "NodeIPAMController"),
    ("k3py.server.controllers.servicelb", "ServiceLBController"),
    ("k3py.server.controllers.podgc", "PodGCController"),
    ("k3py.server.controllers.tokencleaner", "TokenCleaner"),
    ("k3py.server.controllers.tokens", "TokensController"),
    ("k3py.server.controllers.hpa", "HorizontalPodAutoscalerController"),
    ("k3py.server.controllers.persistentvolume", "PersistentVolumeController"),
    ("k3py.server.controllers.ephemeral", "EphemeralVolumeController"),
    ("k3py.server.controllers.storageprotection", "PVCProtectionController"),
    ("k3py.server.controllers.storageprotection", "PVProtectionController"),
    ("k3py.server.controllers.localpath", "LocalPathProvisioner"),
    ("k3py.server.controllers.ingress", "IngressController"),
)
SCHEDULER: tuple[tuple[str, str], ...] = (("k3py.server.scheduler.scheduler", "Scheduler"),)
# each API server's own (upstream: the aggregator's availability controller in every apiserver)
EVERY_SERVER: tuple[tuple[str, str], ...] = (
    ("k3py.server.controllers.apiservice", "APIServiceController"),)


class ControllerGroup:
    """Controllers started together, and the informer handlers they added: stop() removes
    both, so a server that lost leadership leaves nothing of them behind."""

    def __init__(self, controllers: list, handlers: list[tuple[Informer, Handler]]) -> None:
        self.controllers = controllers
        self.handlers = handlers

    async def stop(self) -> None:
        for c in reversed(self.controllers):
            with contextlib.suppress(Exception):
                await c.stop()
        for informer, handler in self.handlers:
            informer.remove_handler(handler)
        self.handlers.clear()


async def start_group(ctx: ControllerContext, entries: tuple[tuple[str, str], ...],
                      disabled: frozenset[str] = frozenset(), *,
                      more: tuple[Callable[[ControllerContext], Any], ...] = ()
                      ) -> ControllerGroup:
    """Start `entries` (and `more`, classes taking the context) in a task of its own, which
    records the handlers they add."""
    async def run() -> ControllerGroup:
        handlers = record_handlers()
        started = await start_controllers(ctx, disabled, entries)
        for cls in more:
            extra = cls(ctx)
            await extra.start()
            started.append(extra)
        return ControllerGroup(started, handlers)
    return await asyncio.create_task(run())


async def start_controllers(ctx: ControllerContext, disabled: frozenset[str] = frozenset(),
                            entries: tuple[tuple[str, str], ...] = CONTROLLERS
                            ) -> list[Controller]:
    started: list[Controller] = []
    for module_name, class_name in entries:
        if class_name in disabled:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            log.warning("controller %s is not part of this build; skipping", class_name)
            continue
        controller = getattr(module, class_name)(ctx)
        await controller.start()
        started.append(controller)
    return started
