"""Starts every built-in controller and the scheduler on a shared ControllerContext.

The one readable list of what runs inside `k3py server`; order matters only for readability."""

from __future__ import annotations

import importlib
import logging

from k3py.server.controllers.base import Controller, ControllerContext

__all__ = ["CONTROLLERS", "start_controllers"]

log = logging.getLogger("k3py.controllers")

# (module, class) pairs; each class is a Controller subclass taking a ControllerContext.
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
    ("k3py.server.controllers.apiservice", "APIServiceController"),
    ("k3py.server.controllers.persistentvolume", "PersistentVolumeController"),
    ("k3py.server.controllers.ephemeral", "EphemeralVolumeController"),
    ("k3py.server.controllers.localpath", "LocalPathProvisioner"),
    ("k3py.server.scheduler.scheduler", "Scheduler"),
)


async def start_controllers(ctx: ControllerContext,
                            disabled: frozenset[str] = frozenset()) -> list[Controller]:
    started: list[Controller] = []
    for module_name, class_name in CONTROLLERS:
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
