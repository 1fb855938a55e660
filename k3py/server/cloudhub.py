"""The server end of the node tunnel: one websocket per node at /v1-k3py/tunnel, authenticated
by the node's client certificate (CN=system:node:<name>, O=system:nodes).

Down: the pods bound to the node and the configmaps/secrets they reference, as reliable
messages (resent until ACKed; a full snapshot when the agent has no state to resume from).
Up: node, node status, lease, pod status and events, written through the Registry, then ACKed.
Streams (pods/log, exec, ...) are multiplexed on the same websocket; see streams.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from k3py.api import errors
from k3py.api.objects import now_rfc3339
from k3py.server.apiserver.auth import Authenticator
from k3py.server.controllers.base import InformerFactory
from k3py.server.devicesync import DeviceFeed
from k3py.server.nodepassword import PASSWORD_HEADER, NodePasswords
from k3py.server.podtokens import KIND as TOKENS_KIND
from k3py.server.podtokens import PodTokens
from k3py.server.registry import Registry
from k3py.server.serviceaccounts import TokenIssuer
from k3py.tunnel import framing
from k3py.tunnel.message import (
    CLOUD,
    GROUP_RESOURCE,
    GROUP_STREAM,
    GROUP_TUNNEL,
    OP_ACK,
    OP_DELETE,
    OP_INSERT,
    OP_SYNC,
    OP_UPDATE,
    Message,
    ack_for,
    new_message,
    resource_key,
    split_resource_key,
)
from k3py.tunnel.reliability import Outbox, ReceivedWindow

__all__ = ["CloudHub", "TUNNEL_PATH", "referenced_objects"]

log = logging.getLogger("k3py.cloudhub")

TUNNEL_PATH = "/v1-k3py/tunnel"
RESUME_HEADER = "X-K3py-Resume"
RESEND_AFTER = 30.0  # seconds without ACK on a live link before a message is sent again
HEARTBEAT = 10.0


def referenced_objects(pod: dict) -> set[tuple[str, str]]:
    """(plural, name) of the configmaps and secrets a pod needs, in the pod's namespace."""
    spec = pod.get("spec") or {}
    refs: set[tuple[str, str]] = set()
    for vol in spec.get("volumes") or []:
        if (vol.get("configMap") or {}).get("name"):
            refs.add(("configmaps", vol["configMap"]["name"]))
        if (vol.get("secret") or {}).get("secretName"):
            refs.add(("secrets", vol["secret"]["secretName"]))
        for src in (vol.get("projected") or {}).get("sources") or []:
            if (src.get("configMap") or {}).get("name"):
                refs.add(("configmaps", src["configMap"]["name"]))
            if (src.get("secret") or {}).get("name"):
                refs.add(("secrets", src["secret"]["name"]))
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for env in c.get("env") or []:
            vf = env.get("valueFrom") or {}
            if (vf.get("configMapKeyRef") or {}).get("name"):
                refs.add(("configmaps", vf["configMapKeyRef"]["name"]))
            if (vf.get("secretKeyRef") or {}).get("name"):
                refs.add(("secrets", vf["secretKeyRef"]["name"]))
        for ef in c.get("envFrom") or []:
            if (ef.get("configMapRef") or {}).get("name"):
                refs.add(("configmaps", ef["configMapRef"]["name"]))
            if (ef.get("secretRef") or {}).get("name"):
                refs.add(("secrets", ef["secretRef"]["name"]))
    for ps in spec.get("imagePullSecrets") or []:
        if ps.get("name"):
            refs.add(("secrets", ps["name"]))
    return refs


def _node_of(pod: dict | None) -> str:
    return ((pod or {}).get("spec") or {}).get("nodeName") or ""


def _ns_name(obj: dict) -> tuple[str, str]:
    md = obj.get("metadata") or {}
    return md.get("namespace") or "", md.get("name") or ""


@dataclass
class NodeSession:
    """What the server knows about one node's link; outlives reconnects of the websocket.

    All writes to the websocket go through one writer task per connection, so messages
    leave in the order they were queued."""

    node: str
    outbox: Outbox = field(default_factory=Outbox)
    window: ReceivedWindow = field(default_factory=ReceivedWindow)
    ws: web.WebSocketResponse | None = None
    streams: dict[str, asyncio.Queue] = field(default_factory=dict)
    live: deque = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def send(self, msg: Message) -> None:
        """Reliable: kept in the outbox until ACKed, sent as soon as the node is connected."""
        self.outbox.add(msg)
        self.wakeup.set()

    def send_live(self, msg: Message) -> bool:
        """Best effort (ACKs, stream frames): dropped if the node is not connected."""
        if self.ws is None or self.ws.closed:
            return False
        self.live.append(msg)
        self.wakeup.set()
        return True

    def resend_due(self, now: float) -> None:
        due = self.outbox.due(now, RESEND_AFTER)
        for msg in due:
            self.outbox.reset_one(msg.id)
        if due:
            self.wakeup.set()

    async def write_loop(self, ws: web.WebSocketResponse) -> None:
        while not ws.closed:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.live:
                await ws.send_str(framing.encode(self.live.popleft()))
            for msg in self.outbox.unsent():
                await ws.send_str(framing.encode(msg))
                self.outbox.mark_sent(msg.id, time.monotonic())


class CloudHub:
    """Per-node sessions, fed by pod/configmap/secret informers; serves the tunnel route."""

    def __init__(self, registry: Registry, authenticator: Authenticator,
                 issuer: TokenIssuer | None = None, *, informers: InformerFactory) -> None:
        self.registry = registry
        self.authenticator = authenticator
        self.issuer = issuer  # pods' service-account tokens go down with them (podtokens.py)
        self.tokens: PodTokens | None = None
        self.sessions: dict[str, NodeSession] = {}
        self.passwords = NodePasswords(registry)
        self._informers = informers  # the server's shared ones: its owner starts and stops them
        self._tasks: set[asyncio.Task] = set()
        self._started = False
        # pods on a node with a live tunnel are deleted gracefully: the agent stops them,
        # then deletes the object with grace 0; elsewhere deletion is immediate
        registry.pod_graceful_delete = self.node_connected_for

    def node_connected(self, node: str) -> bool:
        session = self.sessions.get(node) if node else None
        return session is not None and session.ws is not None and not session.ws.closed

    def node_connected_for(self, pod: dict) -> bool:
        return self.node_connected(_node_of(pod))

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.pods = self._informers.informer("", "pods")
        self.pods.add_index("node", lambda p: [_node_of(p)] if _node_of(p) else [])
        self.pods.add_handler(self._on_pod)
        self.configmaps = self._informers.informer("", "configmaps")
        self.configmaps.add_handler(lambda t, o, n: self._on_ref("configmaps", t, o, n))
        self.secrets = self._informers.informer("", "secrets")
        self.secrets.add_handler(lambda t, o, n: self._on_ref("secrets", t, o, n))
        self.device_feed = DeviceFeed(self._informers, self._send_object)
        self.device_feed.start()
        if self.issuer is not None:
            self._start_tokens(self.issuer)
        self._spawn(self._resend_loop())

    def _start_tokens(self, issuer: TokenIssuer) -> None:
        accounts = self._informers.informer("", "serviceaccounts")

        def account_uid(ns: str, name: str) -> str:
            return ((accounts.get(ns, name) or {}).get("metadata") or {}).get("uid") or ""

        def pod_alive(ns: str, name: str, uid: str) -> bool | None:
            if not self.pods.synced.is_set():
                return None
            pod = self.pods.get(ns, name)
            return pod is not None and pod["metadata"].get("uid") == uid

        def send(node: str, obj: dict) -> None:
            if node in self.sessions:
                self.sessions[node].send(self._object_message(TOKENS_KIND, "MODIFIED", obj))
        self.tokens = PodTokens(issuer, account_uid)
        issuer.pod_alive = pod_alive
        self._spawn(self.tokens.refresh_loop(lambda: [n for n in self.sessions
                                                      if self.node_connected(n)],
                                             lambda n: self.pods.by_index("node", n), send))

    async def stop(self) -> None:
        if self._started:
            await self.device_feed.stop()
        for task in list(self._tasks):
            task.cancel()
        for s in self.sessions.values():
            if s.ws is not None:
                with contextlib.suppress(Exception):
                    await s.ws.close()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---------------------------------------------------------------- down: desired state

    def _refs_for_node(self, node: str) -> set[tuple[str, str, str]]:
        out: set[tuple[str, str, str]] = set()
        for pod in self.pods.by_index("node", node):
            ns = _ns_name(pod)[0]
            out.update((plural, ns, name) for plural, name in referenced_objects(pod))
        return out

    def _ref_object(self, plural: str, ns: str, name: str) -> dict | None:
        inf = self.configmaps if plural == "configmaps" else self.secrets
        return inf.get(ns, name)

    def snapshot(self, node: str) -> Message:
        pods = self.pods.by_index("node", node)
        content: dict[str, list[dict]] = {"pods": pods, "configmaps": [], "secrets": []}
        if self.tokens is not None:
            content[TOKENS_KIND] = [o for o in map(self.tokens.object_for, pods) if o]
        for plural, ns, name in sorted(self._refs_for_node(node)):
            obj = self._ref_object(plural, ns, name)
            if obj is not None:
                content[plural].append(obj)
        content.update(self.device_feed.snapshot(node))
        return new_message(source=CLOUD, group=GROUP_RESOURCE, operation=OP_SYNC,
                           content=content, key="sync")

    def _object_message(self, plural: str, etype: str, obj: dict) -> Message:
        ns, name = _ns_name(obj)
        op = {"ADDED": OP_INSERT, "MODIFIED": OP_UPDATE}.get(etype, OP_DELETE)
        key = resource_key(plural, ns, name)
        return new_message(source=CLOUD, group=GROUP_RESOURCE, operation=op, resource=key,
                           content=obj, key=key,
                           resource_version=(obj.get("metadata") or {}).get(
                               "resourceVersion", ""))

    def _send_object(self, node: str, plural: str, etype: str, obj: dict) -> None:
        """Queue one object change for a node that has a session (devices, device models)."""
        session = self.sessions.get(node)
        if session is not None:
            session.send(self._object_message(plural, etype, obj))

    def _on_pod(self, etype: str, old: dict | None, new: dict | None) -> None:
        before, after = _node_of(old), _node_of(new)
        if before and before != after and before in self.sessions:
            self.sessions[before].send(self._object_message("pods", "DELETED", old))
        if etype == "DELETED" and self.tokens is not None:
            self._pod_tokens_gone(new or old)
        if after and after in self.sessions and new is not None:
            session = self.sessions[after]
            if etype != "DELETED":
                if self.tokens is not None and (etype == "ADDED" or before != after):
                    tokens = self.tokens.object_for(new)  # new to this node: tokens first
                    if tokens is not None:
                        session.send(self._object_message(TOKENS_KIND, "MODIFIED", tokens))
                # referenced objects first, so the agent has them when it starts the pod
                ns = _ns_name(new)[0]
                for plural, name in sorted(referenced_objects(new)):
                    obj = self._ref_object(plural, ns, name)
                    if obj is not None:
                        session.send(self._object_message(plural, "MODIFIED", obj))
            session.send(self._object_message("pods", etype, new))

    def _pod_tokens_gone(self, pod: dict | None) -> None:
        if pod is None or self.tokens is None:
            return
        self.tokens.forget(pod["metadata"].get("uid") or "")
        node = _node_of(pod)
        if node in self.sessions:
            self.sessions[node].send(self._object_message(
                TOKENS_KIND, "DELETED", self.tokens.deleted_object(pod)))

    def _on_ref(self, plural: str, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old
        if obj is None:
            return
        ns, name = _ns_name(obj)
        for node, session in self.sessions.items():
            if (plural, ns, name) in self._refs_for_node(node):
                session.send(self._object_message(plural, etype, obj))

    async def _resend_loop(self) -> None:
        while True:
            await asyncio.sleep(RESEND_AFTER / 3)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                session.resend_due(now)

    # ---------------------------------------------------------------- the websocket

    def node_of_request(self, request: web.Request) -> str:
        user = self.authenticator.authenticate(request)
        if user is None:
            raise errors.unauthorized()
        node = user.node_name
        if node is None:
            raise errors.forbidden(f'User "{user.name}" is not a node; the tunnel needs a node '
                                   f"client certificate")
        return node

    async def handle_tunnel(self, request: web.Request) -> web.StreamResponse:
        node = self.node_of_request(request)
        password = request.headers.get(PASSWORD_HEADER, "")
        if password and not await self.passwords.owns(node, password):
            # a certificate from before the Node was deleted and its name went elsewhere
            log.warning("node %s: tunnel refused, the name belongs to another machine", node)
            raise errors.StatusError(409, "Conflict", f'node name "{node}" belongs to another '
                                     f"machine now (its node password differs)")
        self.start()
        await self.pods.synced.wait()
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, protocols=(framing.SUBPROTOCOL,),
                                   max_msg_size=framing.MAX_FRAME_BYTES)
        await ws.prepare(request)
        session = self.sessions.get(node)
        resume = session is not None and request.headers.get(RESUME_HEADER) == "1"
        if session is None:
            session = self.sessions[node] = NodeSession(node)
        if session.ws is not None and not session.ws.closed:
            await session.ws.close(code=4000, message=b"replaced by a newer connection")
        session.ws = ws
        session.live.clear()
        session.outbox.reset_sent()  # resume: everything unACKed goes again, in order
        log.info("node %s connected (%s)", node, "resume" if resume else "full sync")
        if not resume:
            session.outbox = Outbox()
            session.send(self.snapshot(node))
        writer = asyncio.create_task(session.write_loop(ws))
        session.wakeup.set()
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                try:
                    msg = framing.decode(frame.data)
                except framing.FramingError as e:
                    log.warning("node %s sent a bad frame: %s", node, e)
                    continue
                await self._received(session, msg)
        finally:
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
            if session.ws is ws:
                session.ws = None
                for q in session.streams.values():
                    q.put_nowait(("error", "the node's tunnel disconnected"))
            log.info("node %s disconnected", node)
        return ws

    async def _received(self, session: NodeSession, msg: Message) -> None:
        group = msg.route.group
        if group == GROUP_TUNNEL:
            if msg.route.operation == OP_ACK:
                session.outbox.ack((msg.content or {}).get("ids") or [])
            return
        if group == GROUP_STREAM:
            q = session.streams.get(msg.header.parent_id)
            if q is not None:
                q.put_nowait((msg.route.operation, msg.content))
            return
        if group != GROUP_RESOURCE:
            return
        if session.window.seen(msg.id):
            session.send_live(ack_for([msg.id], source=CLOUD))
            return
        try:
            await self._write_up(session.node, msg)
        except errors.StatusError as e:
            if e.code >= 500:
                session.window.forget(msg.id)  # let the resend try again
                log.warning("node %s: %s %s: %s", session.node, msg.route.operation,
                            msg.route.resource, e.message)
                return
            log.info("node %s: dropped %s %s: %s", session.node, msg.route.operation,
                     msg.route.resource, e.message)
        except Exception:  # noqa: BLE001 - one bad message must not kill the link
            session.window.forget(msg.id)
            log.exception("node %s: writing %s failed", session.node, msg.route.resource)
            return
        session.send_live(ack_for([msg.id], source=CLOUD))

    # ---------------------------------------------------------------- up: writes

    async def _write_up(self, node: str, msg: Message) -> None:
        plural, ns, name, sub = split_resource_key(msg.route.resource)
        body = msg.content if isinstance(msg.content, dict) else {}
        if plural == "nodes":
            if name != node:
                raise errors.forbidden(f"node {node} may not write node {name}")
            await (self._node_status(node, body) if sub == "status"
                   else self._register_node(node, body))
        elif plural == "leases":
            await self._renew_lease(node, body)
        elif plural == "pods" and sub == "status":
            await self._pod_status(node, ns or "", name, body)
        elif plural == "pods" and not sub and msg.route.operation == OP_DELETE:
            await self._pod_terminated(node, ns or "", name, body.get("uid") or "")
        elif plural == "events":
            await self._event(ns or "default", body)
        else:
            raise errors.bad_request(f"unsupported up message {msg.route.resource}")

    async def _register_node(self, node: str, obj: dict) -> None:
        res = self.registry.served("", "nodes")
        md = obj.setdefault("metadata", {})
        md["name"] = node
        if await self.registry.try_get(res, None, node) is None:
            status = obj.pop("status", None)
            try:
                await self.registry.create(res, None, obj)
            except errors.StatusError as e:
                if e.code != 409:
                    raise
            if status:
                await self._node_status(node, status)
            await self.passwords.adopt(node)  # the Node owns its password Secret
            return

        def merge(cur: dict) -> dict:
            labels = cur["metadata"].setdefault("labels", {})
            labels.update(md.get("labels") or {})
            annotations = cur["metadata"].setdefault("annotations", {})
            annotations.update(md.get("annotations") or {})
            return cur
        await self.registry.update_with(res, None, node, merge)
        if obj.get("status"):
            await self._node_status(node, obj["status"])
        await self.passwords.adopt(node)

    async def _node_status(self, node: str, status: dict) -> None:
        res = self.registry.served("", "nodes")

        def put(cur: dict) -> dict:
            cur["status"] = status
            return cur
        await self.registry.update_with(res, None, node, put, subresource="status")

    async def _renew_lease(self, node: str, spec: dict) -> None:
        res = self.registry.served("coordination.k8s.io", "leases")
        spec = {**spec, "holderIdentity": node}
        ns = "kube-node-lease"
        if await self.registry.try_get(res, ns, node) is None:
            nodes = self.registry.served("", "nodes")
            owner = await self.registry.try_get(nodes, None, node)
            md: dict = {"name": node, "namespace": ns}
            if owner is not None:
                md["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node,
                                          "uid": owner["metadata"]["uid"]}]
            try:
                await self.registry.create(res, ns, {"apiVersion": "coordination.k8s.io/v1",
                                                     "kind": "Lease", "metadata": md,
                                                     "spec": spec})
                return
            except errors.StatusError as e:
                if e.code != 409:
                    raise

        def renew(cur: dict) -> dict:
            cur["spec"] = {**(cur.get("spec") or {}), **spec}
            return cur
        await self.registry.update_with(res, ns, node, renew)

    async def _pod_status(self, node: str, ns: str, name: str, body: dict) -> None:
        res = self.registry.served("", "pods")
        uid = body.get("uid")
        status = body.get("status") or {}

        def put(cur: dict) -> dict | None:
            if _node_of(cur) != node:
                return None  # not this node's pod (any more): drop silently
            if uid and cur["metadata"].get("uid") != uid:
                return None  # an older incarnation of the pod
            if cur.get("status") == status:
                return None
            cur["status"] = status
            return cur
        await self.registry.update_with(res, ns, name, put, subresource="status")

    async def _pod_terminated(self, node: str, ns: str, name: str, uid: str) -> None:
        """The agent stopped a terminating pod's containers: finish the deletion (grace 0)."""
        res = self.registry.served("", "pods")
        cur = await self.registry.try_get(res, ns, name)
        if cur is None or _node_of(cur) != node or (uid and cur["metadata"].get("uid") != uid):
            return  # already gone, or not this node's pod
        if not cur["metadata"].get("deletionTimestamp"):
            raise errors.bad_request(f"pod {ns}/{name} is not terminating")
        options: dict = {"gracePeriodSeconds": 0}
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            await self.registry.delete(res, ns, name, options)
        except errors.StatusError as e:
            if e.code != 404:
                raise

    async def _event(self, ns: str, event: dict) -> None:
        res = self.registry.served("", "events")
        event.setdefault("metadata", {})["namespace"] = ns
        event.setdefault("firstTimestamp", now_rfc3339())
        event.setdefault("lastTimestamp", event["firstTimestamp"])
        try:
            await self.registry.create(res, ns, event)
        except errors.StatusError as e:
            if e.code != 409:
                raise

            def repeat(cur: dict) -> dict:  # the agent aggregates repeats under one name
                for k in ("count", "lastTimestamp", "message"):
                    if event.get(k) is not None:
                        cur[k] = event[k]
                return cur
            await self.registry.update_with(res, ns, event["metadata"].get("name") or "",
                                            repeat)

    # ---------------------------------------------------------------- streams

    async def open_stream(self, node: str, operation: str, params: dict
                          ) -> tuple[NodeSession, str, asyncio.Queue]:
        session = self.sessions.get(node)
        if session is None or session.ws is None or session.ws.closed:
            raise errors.service_unavailable(f"node {node} is not connected to the server")
        stream_id = uuid.uuid4().hex
        queue: asyncio.Queue = asyncio.Queue()
        session.streams[stream_id] = queue
        msg = new_message(source=CLOUD, group=GROUP_STREAM, operation=operation,
                          content=params, msg_id=stream_id)
        if not session.send_live(msg):
            session.streams.pop(stream_id, None)
            raise errors.service_unavailable(f"node {node} is not connected to the server")
        return session, stream_id, queue

    async def close_stream(self, session: NodeSession, stream_id: str) -> None:
        if session.streams.pop(stream_id, None) is not None:
            session.send_live(new_message(source=CLOUD, group=GROUP_STREAM,
                                          operation="close", parent_id=stream_id))
