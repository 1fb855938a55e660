"""Start-up steps of `k3py server` that touch the cluster state: the plug-ins of the admission
and authorizer chains, built-in CRDs, namespaces, the default RBAC roles, the kubernetes
Service, authenticators, RBAC's escalation check and reviews, extra routes and the
controllers.

Called in order by k3py.server.main.serve, which owns what they share (the Registry, the one
InformerFactory, the ApiServer); every plug-in is wired here and nowhere else, so two servers
in one process never see each other's. Kept apart from main.py so each step reads on its own."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from k3py.server import admission, crds
from k3py.server.addons.manifests import ManifestDeployer
from k3py.server.apiserver.app import ApiServer
from k3py.server.apiserver.auth import AuthorizerChain
from k3py.server.controllers import localpath, service, servicelb
from k3py.server.controllers.base import (
    Controller,
    ControllerContext,
    EventRecorder,
    InformerFactory,
)
from k3py.server.controllers.defaultclass import DefaultStorageClass
from k3py.server.controllers.manager import start_controllers as start_builtin_controllers
from k3py.server.edge import nodeauth, streams
from k3py.server.edge.cloudhub import CloudHub
from k3py.server.nodeauthz import NodeAuthorizer
from k3py.server.noderestriction import NodeRestriction
from k3py.server.podsecurity import PodSecurityAdmission
from k3py.server.rbac import RBACAuthorizer
from k3py.server.rbac.aggregation import AggregationController
from k3py.server.rbac.defaults import reconcile_defaults
from k3py.server.rbac.escalation import EscalationCheck
from k3py.server.rbac.reviews import Reviews
from k3py.server.registry import Registry
from k3py.server.serviceaccounts import (
    ServiceAccountAdmission,
    TokenIssuer,
    token_request_handler,
)
from k3py.tunnel.protocol import TUNNEL_PATH

__all__ = ["Plugins", "install_admission", "authorizer_chain", "prepare",
           "install_authenticators", "install_rbac", "install_routes", "start_controllers",
           "ensure_namespaces", "disabled_controllers", "SYSTEM_NAMESPACES"]

log = logging.getLogger("k3py.server")

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True, slots=True)
class Plugins:
    """The admission plug-ins of one server that keep state, for the steps after."""
    crds: crds.CustomResources
    services: service.ServiceAllocator


def install_admission(registry: Registry, config) -> Plugins:
    """Fill the registry's AdmissionChain; within each phase the steps run in this order:

    prepare   CustomResourceStrategy, ServiceAllocatedValues
    mutate    ServiceAllocation, ServiceAccount, PodSecurity, DefaultStorageClass
              (create only)
    validate  CustomResourceValidation, NodeRestriction, RBACEscalation (install_rbac)
    convert   CustomResourceConversion
    delete    ServiceRelease

    `registry.admission.describe()` lists the same at run time."""
    chain = registry.admission
    custom = crds.CustomResources(registry)
    custom.install(chain)
    services = service.ServiceAllocator(registry, config.service_cidr,
                                        config.service_node_port_range)
    services.install(chain)
    chain.add_mutator("ServiceAccount", ServiceAccountAdmission(registry))
    chain.add_mutator("PodSecurity", PodSecurityAdmission(registry, admission.warn))
    chain.add_validator("NodeRestriction", NodeRestriction())
    chain.add_mutator("DefaultStorageClass", DefaultStorageClass(registry))
    return Plugins(crds=custom, services=services)


def authorizer_chain(informers: InformerFactory) -> AuthorizerChain:
    """SystemMasters -> Node -> RBAC -> Deny (`names()` lists them); RBAC reads the server's
    shared informers."""
    chain = AuthorizerChain()
    chain.add("Node", NodeAuthorizer(informers).allows)
    chain.add("RBAC", RBACAuthorizer(informers).allows)
    return chain


async def ensure_namespaces(registry: Registry) -> None:
    res = registry.resources.get("", "v1", "namespaces")
    for name in SYSTEM_NAMESPACES:
        if await registry.try_get(res, None, name) is None:
            try:
                await registry.create(res, None, {"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": name}})
            except Exception as e:  # noqa: BLE001 - a concurrent creator won
                log.debug("namespace %s: %s", name, e)


async def prepare(registry: Registry, plugins: Plugins, config, advertise: str) -> None:
    """State the API needs before it opens: namespaces, the default RBAC roles and bindings,
    CRDs served, service allocations known, the kubernetes Service, the local-path
    StorageClass (or its removal under --disable local-storage)."""
    await ensure_namespaces(registry)
    await reconcile_defaults(registry)
    await crds.install_builtin_crds(registry)
    await plugins.crds.load()
    await plugins.services.rebuild()
    await service.ensure_kubernetes_service(registry, plugins.services.kubernetes_ip,
                                            advertise, config.https_listen_port)
    await service.ensure_dns_service(registry, config.cluster_dns_ip, config.cluster_domain)
    await localpath.ensure_local_path_class(registry, localpath.ADDON not in config.disable)


def install_authenticators(api: ApiServer, registry: Registry, issuer: TokenIssuer) -> None:
    """Client certificates are handled by TLS; service-account tokens plug in here (node
    tokens with the routes)."""
    api.authenticator.token_authenticators.append(issuer.authenticate)
    api.streams["token"] = token_request_handler(registry, issuer)


def install_rbac(api: ApiServer, registry: Registry, informers: InformerFactory) -> None:
    """RBAC beyond the authorizer: the escalation check on writes of roles and bindings, and
    the access reviews (can-i, whoami) served as create-only resources."""
    rbac = RBACAuthorizer(informers)
    registry.admission.add_validator("RBACEscalation", EscalationCheck(api.authorizer, rbac))
    Reviews(api.authorizer, rbac).install(api.create_only)


def install_routes(app: web.Application, api: ApiServer, registry: Registry, config,
                   informers: InformerFactory, issuer: TokenIssuer) -> None:
    """Routes that are not Kubernetes resources (the node tunnel) go before the catch-all."""
    nodeauth.install_from_config(app, config, registry)
    hub = CloudHub(registry, api.authenticator, issuer, informers=informers)
    app.router.add_get(TUNNEL_PATH, hub.handle_tunnel)
    streams.install(api, hub)

    async def start_hub(_app: web.Application) -> None:
        hub.start()

    async def stop_hub(_app: web.Application) -> None:
        await hub.stop()
    app.on_startup.append(start_hub)
    app.on_cleanup.append(stop_hub)


def disabled_controllers(config) -> frozenset[str]:
    """The built-in controllers a --disable'd component turns off."""
    off = {localpath.ADDON: "LocalPathProvisioner", servicelb.ADDON: "ServiceLBController"}
    return frozenset(name for addon, name in off.items() if addon in config.disable)


async def start_controllers(registry: Registry, plugins: Plugins, config, advertise: str,
                            informers: InformerFactory) -> list[Controller | ManifestDeployer]:
    ctx = ControllerContext(registry=registry, informers=informers,
                            recorder=EventRecorder(registry), config=config,
                            extra={"api_endpoint": (advertise, config.https_listen_port)})
    started: list[Controller | ManifestDeployer] = [
        *await start_builtin_controllers(ctx, disabled_controllers(config))]
    crd = crds.CRDController(ctx, plugins.crds)
    await crd.start()
    started.append(crd)
    aggregation = AggregationController(ctx)
    await aggregation.start()
    started.append(aggregation)
    deployer = ManifestDeployer(registry, config.manifests_dir)
    await deployer.start()
    started.append(deployer)
    return started
