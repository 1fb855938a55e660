"""Start-up steps of `k3py server` that touch the cluster state: the plug-ins of the admission
and authorizer chains, built-in CRDs, namespaces, the default RBAC roles, the kubernetes
Service, authenticators, RBAC's escalation check and reviews, extra routes and the
controllers.

Called in order by k3py.server.main.serve, which owns what they share (the Registry, the one
InformerFactory, the ApiServer); every plug-in is wired here and nowhere else, so two servers
in one process never see each other's. Kept apart from main.py so each step reads on its own."""

from __future__ import annotations

import datetime
import functools
import logging
import os
import socket
from dataclasses import dataclass

from aiohttp import web

from k3py.api import bootstraptoken
from k3py.api import ingress as ingress_addon
from k3py.hostinfo import machine_secret
from k3py.pki import Pki, client_ssl_context
from k3py.server import admission, crds, dashboard, metrics
from k3py.server.addons.manifests import ManifestDeployer
from k3py.server.apiserver.app import ApiServer
from k3py.server.apiserver.auth import AuthorizerChain, User
from k3py.server.controllers import ingress, localpath, service, servicelb
from k3py.server.controllers.apiendpoints import APIServerEndpoints
from k3py.server.controllers.base import (
    ControllerContext,
    EventRecorder,
    Informer,
    InformerFactory,
)
from k3py.server.controllers.defaultclass import DefaultStorageClass
from k3py.server.controllers.manager import CONTROLLERS, EVERY_SERVER, SCHEDULER, start_group
from k3py.server.controllers.storageprotection import StorageObjectInUseProtection
from k3py.server.edge import nodeauth, streams
from k3py.server.edge.cloudhub import CloudHub
from k3py.server.edge.peerrelay import PEER_GROUPS, PEER_USER, PeerRelay
from k3py.server.edge.peerreports import PEER_REPORTS_PATH, PeerReports
from k3py.server.edge.peertail import PEER_MQTT_TAIL_PATH, PeerTails
from k3py.server.leaderelection import ElectionTimes, LeaderElector, Stoppable
from k3py.server.nodeauthz import NodeAuthorizer
from k3py.server.noderestriction import NodeRestriction
from k3py.server.podsecurity import PodSecurityAdmission, PodSecurityConfig
from k3py.server.rbac import RBACAuthorizer
from k3py.server.rbac.aggregation import AggregationController
from k3py.server.rbac.defaults import reconcile_defaults
from k3py.server.rbac.escalation import EscalationCheck
from k3py.server.rbac.reviews import Reviews
from k3py.server.registry import Registry
from k3py.server.serviceaccounts import (
    ServiceAccountAdmission,
    TokenIssuer,
    legacy_token_user,
    token_request_handler,
)
from k3py.tunnel.protocol import TUNNEL_PATH

__all__ = ["Plugins", "install_admission", "authorizer_chain", "prepare",
           "install_authenticators", "install_rbac", "install_routes", "start_controllers",
           "ensure_namespaces", "disabled_controllers", "install_metrics", "SYSTEM_NAMESPACES"]

log = logging.getLogger("k3py.server")

CONTROLLER_MANAGER_LEASE = "kube-controller-manager"
SCHEDULER_LEASE = "kube-scheduler"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass(frozen=True, slots=True)
class Plugins:
    """The admission plug-ins of one server that keep state, for the steps after."""
    crds: crds.CustomResources
    services: service.ServiceAllocator


def install_admission(registry: Registry, config,
                      pod_security: PodSecurityConfig | None = None) -> Plugins:
    """Fill the registry's AdmissionChain; within each phase the steps run in this order:

    prepare   CustomResourceStrategy, ServiceAllocatedValues
    mutate    ServiceAllocation, ServiceAccount, PodSecurity, DefaultStorageClass,
              StorageObjectInUseProtection (create only)
    validate  CustomResourceValidation, NodeRestriction, RBACEscalation (install_rbac)
    update-check  PodSecurity
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
    pod_security_admission = PodSecurityAdmission(registry, admission.warn, pod_security)
    chain.add_mutator("PodSecurity", pod_security_admission)
    chain.add_validator("NodeRestriction", NodeRestriction())
    chain.add_mutator("DefaultStorageClass", DefaultStorageClass(registry))
    chain.add_mutator("StorageObjectInUseProtection", StorageObjectInUseProtection())
    chain.add_update_check("PodSecurity", pod_security_admission.on_update)
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
    StorageClass and the k3py IngressClass (or their removal under --disable)."""
    await ensure_namespaces(registry)
    await reconcile_defaults(registry)
    await crds.install_builtin_crds(registry)
    await plugins.crds.load()
    await plugins.services.rebuild()
    await service.ensure_kubernetes_service(registry, plugins.services.kubernetes_ip,
                                            advertise, config.https_listen_port,
                                            endpoints=not config.datastore_endpoint)
    await service.ensure_dns_service(registry, config.cluster_dns_ip, config.cluster_domain)
    await localpath.ensure_local_path_class(registry, localpath.ADDON not in config.disable)
    await ingress.ensure_ingress_class(registry, ingress_addon.ADDON not in config.disable)


def install_authenticators(api: ApiServer, registry: Registry, issuer: TokenIssuer,
                           informers: InformerFactory) -> None:
    """Client certificates are handled by TLS; service-account tokens (bound and legacy) and
    bootstrap tokens plug in here (node tokens with the routes)."""
    api.authenticator.token_authenticators.append(issuer.authenticate)
    secrets = informers.informer("", "secrets")
    accounts = informers.informer("", "serviceaccounts")
    api.authenticator.token_authenticators.append(
        functools.partial(legacy_token_user, issuer, secret_of=secrets.get,
                          account_of=accounts.get))
    api.authenticator.token_authenticators.append(
        functools.partial(_bootstrap_token_user, secrets))
    api.streams["token"] = token_request_handler(registry, issuer)


def _bootstrap_token_user(secrets: Informer, token: str) -> User | None:
    """The user of a bootstrap token (`<id>.<secret>`) whose Secret in the cache allows it
    (k3py.api.bootstraptoken.bearer_groups), as upstream's --enable-bootstrap-token-auth."""
    parts = bootstraptoken.parse(token)
    if parts is None:
        return None
    secret = secrets.get(bootstraptoken.NAMESPACE, bootstraptoken.secret_name(parts[0]))
    groups = bootstraptoken.bearer_groups(secret, token, datetime.datetime.now(datetime.UTC))
    if groups is None:
        return None
    return User(bootstraptoken.USER_PREFIX + parts[0], (*groups, "system:authenticated"))


def install_rbac(api: ApiServer, registry: Registry, informers: InformerFactory) -> None:
    """RBAC beyond the authorizer: the escalation check on writes of roles and bindings, and
    the access reviews (can-i, whoami) served as create-only resources."""
    rbac = RBACAuthorizer(informers)
    registry.admission.add_validator("RBACEscalation", EscalationCheck(api.authorizer, rbac))
    Reviews(api.authorizer, rbac).install(api.create_only)


def install_metrics(api: ApiServer, informers: InformerFactory,
                    config) -> metrics.UsageStore | None:
    """metrics.k8s.io served from the nodes' usage reports, unless --disable metrics-server."""
    return metrics.install(api, informers, metrics.ADDON in config.disable)


def install_routes(app: web.Application, api: ApiServer, registry: Registry, config,
                   informers: InformerFactory, issuer: TokenIssuer,
                   usage: metrics.UsageStore | None = None, peers: PeerRelay | None = None
                   ) -> None:
    """Routes that are not Kubernetes resources (the node tunnel, the dashboard) go before the
    catch-all. `peers`: the other servers on a shared datastore, which streams relay to, the
    nodes' reports are shared with, and the dashboard's MQTT tails go through."""
    join = nodeauth.install_from_config(app, config, registry)
    hub = CloudHub(registry, api.authenticator, issuer, informers=informers,
                   authorizer=api.authorizer,
                   passwords=join.passwords if join is not None else None,
                   server_node="" if config.disable_agent else config.effective_node_name,
                   usage=usage, network_policy=not config.disable_network_policy)
    app.router.add_get(TUNNEL_PATH, hub.handle_tunnel)
    streams.install(api, hub, peers)
    shared = None
    if peers is not None:  # every server sees every node's usage, MQTT and tunnel figures
        shared = PeerReports(peers, api.authenticator, usage, hub.mqtt,
                             hub.peer_tunnels)
        hub.report_listeners.add(shared.share)
        app.router.add_post(PEER_REPORTS_PATH, shared.receive)
        # a node's MQTT tail for another server's dashboard, whether or not this one has it
        app.router.add_get(PEER_MQTT_TAIL_PATH, PeerTails(hub, peers, api.authenticator).serve)
    if dashboard.ADDON not in config.disable:
        dashboard.install(app, api, hub, config.dashboard_read_only, usage, peers)

    async def start_hub(_app: web.Application) -> None:
        hub.start()
        if shared is not None:
            shared.start()

    async def stop_hub(_app: web.Application) -> None:
        if shared is not None:
            await shared.stop()
        await hub.stop()
        if peers is not None:
            await peers.close()
    app.on_startup.append(start_hub)
    app.on_cleanup.append(stop_hub)


def peer_relay(registry: Registry, config, bundle: Pki, advertise: str) -> PeerRelay | None:
    """On a shared datastore: the relay of streams to the other servers, which trusts only
    the cluster's server CA and shows them a client certificate of the cluster's client CA."""
    if not config.datastore_endpoint:
        return None
    cert, key = bundle.issue_client_cert(PEER_USER, PEER_GROUPS)
    return PeerRelay(registry, client_ssl_context(bundle.ca_cert_pem, cert, key), advertise,
                     config.https_listen_port)


# --kube-controller-manager-arg name -> the ctx.extra key its controller reads
_CONTROLLER_OPTIONS = {"horizontal-pod-autoscaler-sync-period": "hpa_sync_period",
                       "horizontal-pod-autoscaler-downscale-stabilization":
                           "hpa_downscale_stabilization",
                       "horizontal-pod-autoscaler-tolerance": "hpa_tolerance",
                       "node-monitor-grace-period": "node_monitor_grace_period",
                       "node-monitor-period": "node_monitor_period"}


def disabled_controllers(config) -> frozenset[str]:
    """The built-in controllers a --disable'd component turns off."""
    off = {localpath.ADDON: "LocalPathProvisioner", ingress_addon.ADDON: "IngressController",
           servicelb.ADDON: "ServiceLBController"}
    return frozenset(name for addon, name in off.items() if addon in config.disable)


async def start_controllers(registry: Registry, plugins: Plugins, config, advertise: str,
                            informers: InformerFactory, usage: metrics.UsageStore | None = None,
                            issuer: TokenIssuer | None = None) -> list[Stoppable]:
    """What every server runs (CRDs served, APIService availability, its manifests), and the
    controllers and the scheduler: on a shared datastore each under its Lease, on one server
    at a time (upstream's kube-controller-manager and kube-scheduler leases)."""
    extra = {"api_endpoint": (advertise, config.https_listen_port), "usage": usage,
             "service_account_issuer": issuer}
    extra.update({_CONTROLLER_OPTIONS[k]: v
                  for k, v in config.controller_manager_options.items()})
    ctx = ControllerContext(registry=registry, informers=informers,
                            recorder=EventRecorder(registry), config=config, extra=extra)
    disabled = disabled_controllers(config)
    started: list[Stoppable] = [await start_group(ctx, EVERY_SERVER, disabled)]
    crd = crds.CRDController(ctx, plugins.crds)
    await crd.start()
    started.append(crd)
    if config.datastore_endpoint:  # the kubernetes Service's endpoints: every server
        endpoints = APIServerEndpoints(registry, server_id(config), advertise,
                                       config.https_listen_port)
        await endpoints.start()
        started.append(endpoints)
    elected = ((CONTROLLER_MANAGER_LEASE, CONTROLLERS, (AggregationController,)),
               (SCHEDULER_LEASE, SCHEDULER, ()))
    for lease, entries, more in elected:
        start = functools.partial(start_group, ctx, entries, disabled, more=more)
        if not config.datastore_endpoint:  # alone on its store: nobody to elect against
            started.append(await start())
            continue
        elector = LeaderElector(registry, lease, leader_identity(config), start_group=start,
                                times=ElectionTimes(config.leader_elect_lease_duration,
                                                    config.leader_elect_renew_deadline,
                                                    config.leader_elect_retry_period))
        elector.start()
        started.append(elector)
    deployer = ManifestDeployer(registry, config.manifests_dir)
    await deployer.start()
    started.append(deployer)
    return started


def server_id(config) -> str:
    """A random id kept in the data dir: names this server's Leases, the same after a
    restart, so a server that crashed while leading takes its Leases back at once."""
    return machine_secret(os.path.join(config.server_dir, "server-id"), 8)


def leader_identity(config) -> str:
    """hostname_<server id>, upstream's form of a leader's identity."""
    return f"{socket.gethostname()}_{server_id(config)}"
