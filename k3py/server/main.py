"""`k3py server`: wires the store, registry, API server, controllers and scheduler together.

One readable start-up function (`serve`) in dependency order; `run` is the blocking entry the
CLI calls and turns start-up failures into one clear line and exit code 1."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from k3py import pki
from k3py.aio import use_uvloop
from k3py.api.resources import builtin_registry
from k3py.config import ServerConfig, redact_endpoint
from k3py.hostinfo import dump_stacks_on_sigusr1, primary_ip, sd_notify
from k3py.server import bootstrap, bootstrapdata, secretsencrypt
from k3py.server.apiserver.app import ApiServer, add_resource_routes, build_app
from k3py.server.apiserver.audit import AuditLog, AuditPolicy, PolicyError
from k3py.server.apiserver.auth import Authenticator
from k3py.server.apiserver.discovery import Discovery
from k3py.server.apiserver.headerdeadline import DeadlineSite, HeaderDeadline
from k3py.server.apiserver.limits import RequestLimits
from k3py.server.configfile import ConfigError
from k3py.server.controllers.apiendpoints import lease_name
from k3py.server.controllers.base import InformerFactory
from k3py.server.controllers.cron import parse_cron
from k3py.server.controllers.service import ServiceAllocator
from k3py.server.edge.peerrelay import PEER_USER
from k3py.server.edge.peerreports import PEER_REPORTS_PATH
from k3py.server.podsecurity import PodSecurityConfig
from k3py.server.registry import Registry
from k3py.server.serviceaccounts import TokenIssuer
from k3py.server.snapshots import SnapshotSchedule
from k3py.server.store.backend import Backend, StoreError
from k3py.server.store.encryption import EncryptingBackend, EncryptionKeys
from k3py.tunnel.protocol import HEARTBEAT

__all__ = ["run", "serve", "StartupError", "RunningServer"]

log = logging.getLogger("k3py.server")


class StartupError(Exception):
    """A problem the user must fix; printed as one line."""


@dataclass
class RunningServer:
    registry: Registry
    api: ApiServer
    runner: web.AppRunner
    backend: object
    controllers: list
    url: str
    informers: InformerFactory  # the one cache the controllers, RBAC and the tunnel share
    services: ServiceAllocator


def _check_data_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".k3py-write-test")
        with open(probe, "w") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as e:
        raise StartupError(f"data dir {path} is not writable ({e.strerror}); choose another "
                           f"with --data-dir or run as a user who can write there") from None


def _check_cluster_dns(config: ServerConfig) -> None:
    import ipaddress
    ip = ipaddress.ip_address(config.cluster_dns_ip)
    if not any(ip in net for net in config.service_networks):
        raise StartupError(f"--cluster-dns {config.cluster_dns_ip} is outside --service-cidr "
                           f"{config.service_cidr}: choose an address inside it")


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise StartupError(f"port {port} on {host} is already in use; stop what is "
                               f"listening there or pass --https-listen-port") from None
        raise StartupError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    finally:
        s.close()


async def _open_store(config: ServerConfig) -> Backend:
    """The embedded SQLite store, or the PostgreSQL one several servers share (its driver is
    imported only then). A datastore that cannot be used is one line at start."""
    if not config.datastore_endpoint:
        from k3py.server.store.sqlite import SQLiteBackend
        backend: Backend = SQLiteBackend(config.db_path, compact_interval=config.compact_interval,
                                         compact_min_retain=config.compact_min_retain)
        await backend.start()
        return backend
    from k3py.server.store.postgres import PostgresBackend
    backend = PostgresBackend(config.datastore_endpoint, cafile=config.datastore_cafile,
                              certfile=config.datastore_certfile,
                              keyfile=config.datastore_keyfile,
                              compact_interval=config.compact_interval,
                              compact_min_retain=config.compact_min_retain)
    try:
        await backend.start()
    except StoreError as e:
        raise StartupError(str(e)) from None
    return backend


async def _cluster_identity(backend: Backend, config: ServerConfig, sans: list[str],
                            ips: list[str]) -> tuple[pki.Pki, EncryptionKeys]:
    """The CAs, certificates, join token and secrets-encryption keys. On a shared datastore
    they come from its bootstrap data (bootstrapdata.py), or this first server writes them
    there; if another server wrote first meanwhile, this one takes theirs."""
    for _ in range(2):
        if config.datastore_endpoint:
            try:
                await bootstrapdata.load(backend, config)
            except bootstrapdata.BootstrapError as e:
                raise StartupError(str(e)) from None
        bundle = pki.ensure_pki(config.tls_dir, sans=sans, ips=ips,
                                service_ip=config.kubernetes_service_ip)
        # the join token file; nodeauth reads it back when it installs the join route
        token = pki.ensure_token(config.token_path, bundle.ca_cert_pem, config.token)
        keys = EncryptionKeys.load_or_create(config.encryption_config_path,
                                             enable=config.secrets_encryption)
        if not config.datastore_endpoint or await bootstrapdata.save(backend, config, token):
            return bundle, keys
    raise StartupError("another server kept rewriting the datastore's bootstrap data; "
                       "start this server again")


async def serve(config: ServerConfig, *, stop: asyncio.Event | None = None,
                started: asyncio.Future | None = None) -> RunningServer:
    """Start everything; returns once serving. Call `shutdown` to stop."""
    _check_data_dir(config.data_dir)
    _check_port(config.bind_address, config.https_listen_port)
    _check_cluster_dns(config)
    pod_security = _pod_security_config(config)
    for d in (config.server_dir, os.path.dirname(config.db_path), config.tls_dir):
        os.makedirs(d, mode=0o700, exist_ok=True)
    backend = await _open_store(config)  # first: a datastore that cannot be used changes nothing

    advertise = config.advertise_address or (
        "127.0.0.1" if config.bind_address in ("127.0.0.1", "localhost") else primary_ip())
    sans = [socket.gethostname(), "localhost", *config.tls_san]
    ips = ["127.0.0.1", advertise]
    if config.bind_address not in ("0.0.0.0", "::", ""):
        ips.append(config.bind_address)
    try:
        bundle, keys = await _cluster_identity(backend, config, sans, ips)
    except BaseException:
        await backend.close()
        raise
    if config.datastore_endpoint:  # logged once it is known to be usable with this token
        log.info("datastore: %s", redact_endpoint(config.datastore_endpoint))

    resources = builtin_registry()
    secrets = resources.find("", "secrets")
    assert secrets is not None
    encrypting = EncryptingBackend(backend, keys, resources.storage_prefix(secrets)) \
        if keys.keys else None
    backend = encrypting or backend  # its start() would start the store again: already open
    registry = Registry(backend, resources)
    # on a shared datastore: the cluster's current keys before any secret is written here
    key_sync = secretsencrypt.sync_for(registry, config, encrypting,
                                       lease_name(bootstrap.server_id(config)))
    if key_sync is not None:
        try:
            await key_sync.start()
        except Exception as e:  # noqa: BLE001 - the datastore went away, a bad stored file
            await backend.close()
            raise StartupError(f"cannot read the cluster's secrets-encryption keys from the "
                               f"datastore: {e}") from None
    plugins = bootstrap.install_admission(registry, config, pod_security)
    await bootstrap.prepare(registry, plugins, config, advertise)

    # one informer per resource for this server: controllers, RBAC and the tunnel share it
    informers = InformerFactory(registry)
    registry.cached = informers.cached  # admission's namespace and ServiceAccount reads
    url_host = "127.0.0.1" if config.bind_address in ("0.0.0.0", "::", "") else \
        config.bind_address
    server_address = f"{advertise}:{config.https_listen_port}"
    api = ApiServer(registry=registry, resources=resources, authenticator=Authenticator(),
                    authorizer=bootstrap.authorizer_chain(informers),
                    discovery=Discovery(resources, server_address))
    issuer = TokenIssuer(bundle.sa_key_pem)  # also mints the pods' tokens the tunnel sends
    bootstrap.install_authenticators(api, registry, issuer, informers)
    bootstrap.install_rbac(api, registry, informers)
    audit = _audit_log(config)
    deadline = HeaderDeadline()
    app = build_app(api, audit, RequestLimits(
        max_readonly=config.max_requests_inflight,
        max_mutating=config.max_mutating_requests_inflight, timeout=config.request_timeout),
        deadline)
    if audit is not None:
        async def close_audit(_app: web.Application) -> None:
            audit.close()
        app.on_cleanup.append(close_audit)
    usage = bootstrap.install_metrics(api, informers, config)
    bootstrap.install_routes(app, api, registry, config, informers, issuer, usage,
                             bootstrap.peer_relay(registry, config, bundle, advertise,
                                                  api.authenticator))
    secretsencrypt.install(app, api.authenticator, encrypting, key_sync)
    add_resource_routes(app)
    # aiohttp rounds a timeout longer than the threshold up to the whole second: so that a
    # cut tunnel is closed HEARTBEAT_TIMEOUT after its last frame, not up to 1 s later
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           timeout_ceil_threshold=HEARTBEAT)
    await runner.setup()
    ssl_ctx = pki.server_ssl_context(bundle)
    site = DeadlineSite(runner, config.bind_address or None, config.https_listen_port,
                        deadline=deadline, ssl_context=ssl_ctx, backlog=1024,
                        reuse_address=True)
    await site.start()
    url = f"https://{url_host}:{config.https_listen_port}"
    if config.write_kubeconfig:
        admin_cert, admin_key = bundle.admin_cert_pem, bundle.admin_key_pem
        pki.write_kubeconfig(config.write_kubeconfig, url, bundle.ca_cert_pem, admin_cert,
                             admin_key, mode=config.kubeconfig_mode)
    controllers = await bootstrap.start_controllers(registry, plugins, config, advertise,
                                                    informers, usage, issuer)
    if key_sync is not None:
        controllers.append(key_sync)  # stopped with them
    schedule = _snapshot_schedule(config)
    if schedule is not None:
        schedule.start()
        controllers.append(schedule)
    api.ready = True
    log.info("k3py server is ready at %s (node token in %s)", url, config.token_path)
    return RunningServer(registry=registry, api=api, runner=runner, backend=backend,
                         controllers=controllers, url=url, informers=informers,
                         services=plugins.services)


def _snapshot_schedule(config: ServerConfig) -> SnapshotSchedule | None:
    """Scheduled snapshots of the embedded store, as K3s's (on unless --disable-snapshots)."""
    if config.disable_snapshots:
        return None
    if config.datastore_endpoint:
        log.info("scheduled snapshots are off: a PostgreSQL datastore is backed up with the "
                 "database's own tools")
        return None
    return SnapshotSchedule(config.db_path, config.snapshots_dir, config.effective_node_name,
                            parse_cron(config.snapshot_schedule_cron), config.snapshot_retention)


def _pod_security_config(config: ServerConfig) -> PodSecurityConfig:
    if not config.pod_security_admission_config_file:
        return PodSecurityConfig()
    try:
        return PodSecurityConfig.load(config.pod_security_admission_config_file)
    except ConfigError as e:
        raise StartupError(f"--pod-security-admission-config-file: {e}") from None


def _audit_log(config: ServerConfig) -> AuditLog | None:
    if not config.audit_log_path:
        return None
    try:
        # a peer's batch of its nodes' reports comes every SEND_EVERY (1 s): not audited
        policy = AuditPolicy.load(config.audit_policy_file) if config.audit_policy_file \
            else AuditPolicy.default(quiet=[(PEER_USER, PEER_REPORTS_PATH)])
        os.makedirs(os.path.dirname(os.path.abspath(config.audit_log_path)), exist_ok=True)
        return AuditLog(config.audit_log_path, policy, max_size_mb=config.audit_log_maxsize,
                        max_backups=config.audit_log_maxbackup)
    except PolicyError as e:
        raise StartupError(str(e)) from None
    except OSError as e:
        raise StartupError(f"cannot write the audit log {config.audit_log_path}: "
                           f"{e.strerror}") from None


async def shutdown(server: RunningServer) -> None:
    server.api.ready = False
    for c in reversed(server.controllers):
        with contextlib.suppress(Exception):
            await c.stop()
    with contextlib.suppress(Exception):
        await server.runner.cleanup()
    await server.informers.stop()
    await server.services.stop()
    await server.backend.close()


class Stoppable(Protocol):
    """What `after_ready` hands back (the embedded agent): stopped before the server."""

    async def stop(self) -> None: ...


AfterReady = Callable[[ServerConfig, RunningServer], Awaitable[Stoppable | None]]


async def _main(config: ServerConfig, after_ready: AfterReady | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    dump_stacks_on_sigusr1(loop)
    server = await serve(config)
    print(f"k3py server ready: {server.url}", file=sys.stderr, flush=True)
    extra = await after_ready(config, server) if after_ready else None
    sd_notify("READY=1")  # Type=notify units (install.sh) count as started from here
    gc.freeze()  # what start-up made (modules, schemas, routes) lives on: never scan it again
    await stop.wait()
    sd_notify("STOPPING=1")
    log.info("shutting down")
    if extra is not None:
        with contextlib.suppress(Exception):
            await extra.stop()
    await shutdown(server)
    return 0


def _raise_open_files_limit() -> None:
    """Clients, watches and node tunnels each hold a socket: take the hard limit of open
    files as the soft one (systemd units from install.sh give 1048576, as K3s's)."""
    with contextlib.suppress(Exception):
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# The server holds millions of long-lived objects (informer and watch caches, the tunnel's
# unACKed messages), almost none in reference cycles. With the default thresholds (700, 10, 10)
# a full collection walked all of them every 2-3 s at 200 nodes and 3,000 pods, freeing nothing,
# 0.1-0.8 s each with the event loop stopped (bench/scale.py: API p99 in seconds), and took 12%
# of the CPU of creating 5,000 pods (bench/api.py). A full one is now considered only after 100
# of the middle generation's (and still only once the old generation grew by 25%). Young ones
# come every 10,000 allocations: a burst of creates (bench/api.py, 16 in flight) spends 24 us
# of GC a realistic pod there, against 10 us every 50,000, but each pause is a fifth as long,
# and pauses are what a request waits behind. At 1,000 hollow nodes and 10,000 pods
# (bench/scale.py) the server's longest young and middle collections took 104 and 284 ms
# every 50,000; every 10,000, 31 and 76 ms.
_GC_THRESHOLDS = (10_000, 10, 100)


def run(config: ServerConfig, *, after_ready: AfterReady | None = None) -> int:
    """Blocking entry for the CLI. `after_ready(config, server)` may start more (the
    embedded agent, which the server package must not import) and return a handle with
    an async stop()."""
    logging.basicConfig(
        level=logging.DEBUG if config.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _raise_open_files_limit()
    gc.set_threshold(*_GC_THRESHOLDS)
    use_uvloop()
    try:
        return asyncio.run(_main(config, after_ready))
    except StartupError as e:
        print(f"k3py: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
