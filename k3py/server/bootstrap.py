"""Start-up steps of `k3py server` that touch the cluster state: built-in CRDs, namespaces,
the kubernetes Service, authenticators, extra routes and the controllers.

Kept apart from main.py so each step can be read (and later swapped) on its own."""

from __future__ import annotations

import logging

from aiohttp import web

from k3py.server.apiserver.app import ApiServer
from k3py.server.controllers.base import ControllerContext, EventRecorder, InformerFactory
from k3py.server.registry import Registry

__all__ = ["prepare", "install_authenticators", "install_routes", "start_controllers",
           "SYSTEM_NAMESPACES"]

log = logging.getLogger("k3py.server")

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


async def ensure_namespaces(registry: Registry) -> None:
    res = registry.resources.get("", "v1", "namespaces")
    for name in SYSTEM_NAMESPACES:
        if await registry.try_get(res, None, name) is None:
            try:
                await registry.create(res, None, {"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": name}})
            except Exception as e:  # noqa: BLE001 - a concurrent creator won
                log.debug("namespace %s: %s", name, e)


async def prepare(registry: Registry, config, advertise: str) -> None:
    await ensure_namespaces(registry)
    try:
        from k3py.server import crds
        await crds.install_builtin_crds(registry)
        await crds.load_crds(registry)
    except ImportError:
        log.warning("CRD support not available")
    try:
        from k3py.server.controllers import service
        allocator = service.ServiceAllocator.install(
            registry, config.service_cidr, config.service_node_port_range)
        await allocator.rebuild() if hasattr(allocator, "rebuild") else None
        await service.ensure_kubernetes_service(registry, advertise, config.https_listen_port)
    except ImportError:
        log.warning("service allocation not available")


def install_authenticators(api: ApiServer, registry: Registry, config, token: str,
                           sa_key_pem: bytes) -> None:
    """Client certificates are handled by TLS; service-account (and node) tokens plug in here."""
    from k3py.server.serviceaccounts import (
        ServiceAccountAdmission,
        TokenIssuer,
        token_request_handler,
    )
    issuer = TokenIssuer(sa_key_pem)
    api.authenticator.token_authenticators.append(issuer.authenticate)
    api.streams["token"] = token_request_handler(registry, issuer)
    api.authenticator.sa_issuer = issuer  # type: ignore[attr-defined] # CloudHub mints pod tokens
    ServiceAccountAdmission.install(registry)


def install_routes(app: web.Application, api: ApiServer, registry: Registry, config) -> None:
    """Routes that are not Kubernetes resources (the node tunnel) go before the catch-all."""
    from k3py.server.edge import nodeauth, streams
    from k3py.server.edge.cloudhub import CloudHub
    from k3py.tunnel.protocol import TUNNEL_PATH
    nodeauth.install_from_config(app, config, registry)
    from k3py.server.rbac import RBACAuthorizer
    informers = InformerFactory(registry)  # the hub's; stopped below, after the hub
    hub = CloudHub(registry, api.authenticator, getattr(api.authenticator, "sa_issuer", None),
                   informers=informers)
    app.router.add_get(TUNNEL_PATH, hub.handle_tunnel)
    streams.install(api, hub)
    rbac = RBACAuthorizer.install(registry)

    async def start_hub(_app: web.Application) -> None:
        hub.start()
        rbac.start()

    async def stop_hub(_app: web.Application) -> None:
        await hub.stop()
        await informers.stop()
        await rbac.stop()
    app.on_startup.append(start_hub)
    app.on_cleanup.append(stop_hub)


async def start_controllers(registry: Registry, config, advertise: str) -> list:
    from k3py.server.controllers.manager import start_controllers as start_all
    informers = InformerFactory(registry)
    ctx = ControllerContext(registry=registry, informers=informers,
                            recorder=EventRecorder(registry), config=config,
                            extra={"api_endpoint": (advertise, config.https_listen_port)})
    disabled = frozenset()
    started = await start_all(ctx, disabled)
    try:
        from k3py.server.crds import CRDController
        crd = CRDController(ctx)
        await crd.start()
        started.append(crd)
    except ImportError:
        pass
    from k3py.server.addons.manifests import ManifestDeployer
    deployer = ManifestDeployer(registry, config.manifests_dir)
    await deployer.start()
    started.append(deployer)
    return started
