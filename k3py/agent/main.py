"""`k3py agent`: join, then run edgehub, metamanager, the device twin and its MQTT event bus,
the pod syncer, the local-path volume cleanup, the node's service networking and ingress
proxy, and node heartbeats.

`run(config)` is the blocking CLI entry (one clear error line and exit 1 on a join problem);
`start_agent(config)` also starts the same agent inside the server's event loop (embedded)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
from dataclasses import dataclass

import aiohttp

from k3py.agent.dashboard import EdgeDashboard
from k3py.agent.devices.eventbus import BusError
from k3py.agent.devices.manager import DeviceManager
from k3py.agent.edgehub import EdgeHub
from k3py.agent.ingress.manager import IngressManager
from k3py.agent.join import JoinError, join, node_password, ssl_context
from k3py.agent.metamanager import MetaManager
from k3py.agent.metrics import MetricsReporter
from k3py.agent.network.manager import NetworkManager
from k3py.agent.network.podnet import PodNetwork, network_name
from k3py.agent.node import NodeReporter, node_object, parse_taint
from k3py.agent.pods import PodSyncer
from k3py.agent.runtime import images
from k3py.agent.runtime.libpod import LibpodAPI
from k3py.agent.runtime.podman import LABEL_CLUSTER, RuntimeError_
from k3py.agent.storage.cleanup import VolumeCleanup
from k3py.agent.streams import install_stream_handlers
from k3py.aio import cancel_and_wait, use_uvloop
from k3py.api.servicelb import PORTS_IN_USE_ANNOTATION
from k3py.config import AgentConfig
from k3py.hostinfo import dump_stacks_on_sigusr1, primary_ip, sd_notify
from k3py.tunnel.protocol import FEATURE_NODE_STATUS, HEARTBEAT, NODE_PASSWORD_HEADER

__all__ = ["run", "start_agent", "AgentHandle"]

log = logging.getLogger("k3py.agent")


@dataclass
class AgentHandle:
    node_name: str
    session: aiohttp.ClientSession
    meta: MetaManager
    hub: EdgeHub
    pods: PodSyncer
    reporter: NodeReporter
    runtime: LibpodAPI
    devices: DeviceManager
    network: NetworkManager
    volumes: VolumeCleanup
    metrics: MetricsReporter
    ingress: IngressManager
    dashboard: EdgeDashboard | None = None

    async def stop(self) -> None:
        if self.dashboard is not None:
            await self.dashboard.stop()
        await self.metrics.stop()
        await self.reporter.stop()
        await self.devices.stop()
        await self.ingress.stop()
        await self.network.stop()
        await self.volumes.stop()
        await self.pods.stop()
        await self.hub.stop()
        await self.meta.close()
        await self.session.close()
        await self.runtime.close()


async def start_agent(config: AgentConfig) -> AgentHandle:
    """Join and start every part of the agent (also run by `k3py server`, in-process, for
    its own node)."""
    if not config.server:
        raise JoinError("--server (K3PY_URL) is required")
    agent_dir = config.agent_dir
    node_name = config.effective_node_name
    try:
        taints = [parse_taint(t) for t in config.node_taint]
    except ValueError as e:
        raise JoinError(str(e)) from None
    runtime = LibpodAPI(agent_dir=agent_dir, node_name=node_name,
                        endpoint=config.container_runtime_endpoint,
                        extra_args=config.podman_args)
    if shutil.which(runtime.binary) is None:
        raise JoinError("podman is not installed (not found on PATH); this node cannot run "
                        "pods. Install podman (e.g. sh scripts/setup.sh)")
    version = await runtime.version()
    if version == "unknown":
        raise JoinError("podman does not work on this host ('podman version' failed); "
                        "this node cannot run pods")
    # aiohttp rounds its timers above the threshold up to the whole second: so that the agent,
    # too, notices a cut tunnel HEARTBEAT_TIMEOUT after the last frame, not up to 1 s later
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, connect=15),
        connector=aiohttp.TCPConnector(timeout_ceil_threshold=HEARTBEAT))
    opening = asyncio.ensure_future(runtime.open())  # find or start the podman API meanwhile
    try:
        try:
            if runtime.endpoint:
                await opening  # a given socket that does not answer fails before the join
            creds = await join(session, config.server, config.token, node_name, agent_dir)
            log.info("%s", await opening)
            runtime.cluster = creds.cluster_id()
        except RuntimeError_ as e:
            raise JoinError(str(e)) from None
        images_dir = config.images_dir
        os.makedirs(images_dir, exist_ok=True)  # where a user copies an images tarball
        loaded = await images.import_dir(runtime, images_dir)
        if loaded:
            log.info("imported %d image tarball(s) from %s", len(loaded), images_dir)
        meta = MetaManager(config.meta_db_path)
        await meta.open()
    except BaseException:
        await session.close()
        await cancel_and_wait(opening)
        await runtime.close()
        raise
    node_ip, *more_ips = config.node_ip.split(",") if config.node_ip else [primary_ip()]
    node = node_object(name=node_name, node_ip=node_ip, more_ips=more_ips,
                       labels=config.labels, taints=taints,
                       runtime_version=version, data_dir=config.data_dir)
    hub = EdgeHub(server=config.server, ssl_context=ssl_context(creds), meta=meta, session=session,
                  headers={NODE_PASSWORD_HEADER: node_password(agent_dir)}, node_name=node_name)
    try:
        devices = DeviceManager(config, node_name, meta, hub)
        await devices.start()  # the broker first: a taken port stops the agent here
    except BusError as e:
        await meta.close()
        await session.close()
        await runtime.close()
        raise JoinError(str(e)) from None
    reporter = NodeReporter(node, hub.send,
                            server_asks=lambda: hub.speaks(FEATURE_NODE_STATUS))
    pods = PodSyncer(meta=meta, runtime=runtime, send=hub.send, data_dir=config.data_dir,
                     node_name=node_name, host_ip=node_ip, server_url=config.server)
    pod_network = PodNetwork(runtime, name=network_name(runtime.cluster, node_name),
                             labels={LABEL_CLUSTER: runtime.cluster})
    network = NetworkManager(
        meta, node_name=node_name, cluster_id=runtime.cluster, pod_network=pod_network,
        node_ip=node_ip,
        report_ports_in_use=lambda ports: reporter.annotate(PORTS_IN_USE_ANNOTATION, ports),
        hub=hub)
    volumes = VolumeCleanup(meta, hub.send, node_name=node_name,
                            storage_path=config.local_storage_path)
    runtime.cluster_dns = network.pod_dns  # ClusterFirst pods' resolver
    runtime.pod_network = network.pod_network  # the node's pod CIDR bridge
    metrics = MetricsReporter(runtime, node_name, config.metrics_resolution, hub.send_live)
    ingress = IngressManager(meta, node_name=node_name, http_port=config.ingress_http_port,
                             https_port=config.ingress_https_port)
    install_stream_handlers(hub, pods, runtime)
    hub.on_connect.append(lambda: asyncio.ensure_future(reporter.register()))
    hub.on_status_request = reporter.post_status
    network.start()
    ingress.start()
    hub.start()
    pods.start()
    volumes.start()
    reporter.start()
    metrics.start()
    handle = AgentHandle(node_name, session, meta, hub, pods, reporter, runtime, devices,
                         network, volumes, metrics, ingress)
    if config.dashboard_port:
        handle.dashboard = EdgeDashboard(
            node=node_name, agent_dir=agent_dir, bind=config.dashboard_bind,
            port=config.dashboard_port, meta=meta, pods=pods, devices=devices, hub=hub,
            runtime=runtime)
        try:
            await handle.dashboard.start()
        except OSError as e:
            await handle.stop()
            raise JoinError(f"--dashboard-port {config.dashboard_port}: cannot listen on "
                            f"{config.dashboard_bind}: {e.strerror or e}") from None
    log.info("k3py agent %s started (server %s)", node_name, config.server)
    return handle


async def _main(config: AgentConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    dump_stacks_on_sigusr1(loop)
    handle = await start_agent(config)
    print(f"k3py agent {handle.node_name} running", file=sys.stderr, flush=True)
    sd_notify("READY=1")
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(handle.hub.fatal.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    await handle.stop()
    if handle.hub.fatal.is_set():
        raise JoinError(handle.hub.refused)
    return 0


def _few_malloc_arenas() -> None:
    """glibc gives threads that allocate their own malloc arenas, each adding to the resident
    size; the agent's worker threads (meta.db writes, port-forward connects) only do short
    work, so two arenas are plenty on a small board. No-op where glibc's mallopt is absent."""
    with contextlib.suppress(Exception):
        import ctypes
        ctypes.CDLL(None).mallopt(-8, 2)  # M_ARENA_MAX


def run(config: AgentConfig) -> int:
    """Blocking entry of `k3py agent`: one error line and exit code 1 on a join problem."""
    _few_malloc_arenas()
    logging.basicConfig(
        level=logging.DEBUG if config.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    use_uvloop()  # as the server (and so its embedded agent) runs
    try:
        return asyncio.run(_main(config))
    except JoinError as e:
        print(f"k3py: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        with contextlib.suppress(Exception):
            logging.shutdown()
