"""The node's ingress controller, fed from metamanager (so it keeps serving offline): the
Ingresses, IngressClasses, Services, EndpointSlices and TLS Secrets the server sends every node
become the proxy's routing table (routes.py), rebuilt a moment after any change and swapped in
whole: open connections are not dropped, the next request uses the new table.

The proxy (proxy.py) listens on --ingress-http-port and --ingress-https-port of every address
of the node while the ingress is on (an IngressClass of controller `k3py.io/ingress` exists:
the server keeps one unless `--disable ingress`), and stops when it goes. A port that cannot be
bound is logged and tried again at the next change; what is wrong with an Ingress is logged
once per new problem (the server puts the Events on it: server/controllers/ingress.py)."""

from __future__ import annotations

import asyncio
import logging

from k3py.agent.ingress.proxy import IngressProxy
from k3py.agent.ingress.routes import RouteTable, build_routes
from k3py.agent.metamanager import MetaManager
from k3py.agent.rebuild import Rebuilder
from k3py.api.ingress import TLS_SECRET_TYPE, enabled

__all__ = ["IngressManager", "DEBOUNCE_SECONDS"]

log = logging.getLogger("k3py.ingress")

DEBOUNCE_SECONDS = 0.1  # a burst of changes (a rollout's endpoints): one rebuild
_KINDS = frozenset({"ingresses", "ingressclasses", "services", "endpointslices", "secrets"})


class IngressManager:
    def __init__(self, meta: MetaManager, *, node_name: str, http_port: int,
                 https_port: int, host: str | None = None) -> None:
        self.meta = meta
        self.node_name = node_name
        self.http_port = http_port
        self.https_port = https_port
        self.host = host  # None: every address of the node
        self.proxy: IngressProxy | None = None
        self._problems: set[tuple[str, str]] = set()
        self._bind_failed = False
        # a failed rebuild leaves the proxy its last table
        self._rebuilder = Rebuilder(meta, _KINDS, self.sync, debounce=DEBOUNCE_SECONDS,
                                    log=log, what="ingress routes")

    def start(self) -> None:
        self._rebuilder.start()

    async def stop(self) -> None:
        await self._rebuilder.stop()
        await self._stop_proxy()

    async def sync(self) -> None:
        classes = self.meta.objects("ingressclasses")
        if not enabled(classes):
            await self._stop_proxy()
            return
        table = build_routes(
            self.meta.objects("ingresses"), self.meta.objects("services"),
            self.meta.objects("endpointslices"),
            [s for s in self.meta.objects("secrets") if s.get("type") == TLS_SECRET_TYPE],
            self.node_name, classes)
        self._log_problems(table)
        if self.proxy is None:
            await self._start_proxy(table)
        else:
            self.proxy.table = table

    async def _start_proxy(self, table: RouteTable) -> None:
        proxy = IngressProxy(table)
        try:
            await proxy.start(self.host, self.http_port, self.https_port)
        except asyncio.CancelledError:  # the agent stops meanwhile: close its client session
            await proxy.stop()
            raise
        except OSError as e:
            await proxy.stop()
            if not self._bind_failed:
                log.warning("the ingress proxy cannot listen on ports %s/%s (%s); Ingresses "
                            "are not served on this node", self.http_port, self.https_port,
                            e.strerror or e)
                self._bind_failed = True
            return
        self._bind_failed = False
        self.proxy = proxy
        log.info("ingress proxy listening on ports %s (http) and %s (https)",
                 proxy.ports.get("http"), proxy.ports.get("https"))

    async def _stop_proxy(self) -> None:
        if self.proxy is not None:
            proxy, self.proxy = self.proxy, None
            await proxy.stop()
            log.info("ingress proxy stopped: no IngressClass of k3py.io/ingress")

    def _log_problems(self, table: RouteTable) -> None:
        now = set(table.problems)
        for ingress, message in sorted(now - self._problems):
            log.warning("ingress %s: %s", ingress, message)
        self._problems = now
