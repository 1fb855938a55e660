"""Upstream status: what a node writes through its tunnel (its Node and status, its Lease,
its pods' status, finished pod deletions, Events, its Devices' status: devicestatus.py, the
removal of its deleted local-path volumes' directories), via the Registry, as the node's own
requests: each write is first asked of the server's authorizer chain (the Node authorizer)
with the node's user, and runs with that user as the request's user, so admission (NodeRestriction) judges it as it judges the node's HTTP requests.
A stolen node gains nothing by writing through its tunnel instead of the API. Its usage
reports (of its own node only) go to the metrics UsageStore, its MQTT summaries to
MqttFigures (both memory only), and each is told to `report_listeners` (the other servers'
share of them, peerreports.py).

The server, not the node, decides a Node's role labels (`node-role.kubernetes.io/*`, which
NodeRestriction keeps from nodes, as K3s's server and KubeEdge's cloud set them): control-plane
and master for the server's own node, edge for every other, given to a Node that has no role
label yet.

A posted Node status replaces only the agent's part of the stored one, as upstream's kubelet
patches it, and its conditions get their lastTransitionTime from the stored Node, as the kubelet
sets it from the Node it reads (nodestatus.merged_status: other writers' conditions stay; the
stored time while a status stays, the server's now when it changed); what was stored of it is
remembered per node (`agent_status`, for cloudhub.py to see it changed by others).

Called by the tunnel handler (sessions.py) once per new resource message: a StatusError below
500 drops the message (it is ACKed), anything else leaves it to the node's resend."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from k3py.api import errors
from k3py.api.localpath import CLEANUP_FINALIZER, awaits_cleanup, volume_node
from k3py.api.objects import now_rfc3339
from k3py.server.apiserver.auth import REQUEST_USER, AuthorizerChain, User
from k3py.server.edge.devicestatus import DeviceStatusWriter
from k3py.server.edge.devicesync import DEVICE_GROUP
from k3py.server.edge.downstream import node_of
from k3py.server.edge.nodepassword import NodePasswords
from k3py.server.edge.nodestatus import AgentStatus, merged_status
from k3py.server.registry import Registry
from k3py.tunnel.message import OP_DELETE, Message, split_resource_key
from k3py.tunnel.mqtt import MQTT_KIND, MqttSummary
from k3py.tunnel.protocol import (
    DEVICE_STATUS,
    DEVICES_KIND,
    METRICS_KIND,
    VOLUME_CLEANED,
    UsageReport,
)

if TYPE_CHECKING:
    from k3py.server.edge.mqttstats import MqttFigures
    from k3py.server.metrics.store import UsageStore

__all__ = ["UpstreamWriter", "node_user", "role_labels"]

_ROLE_PREFIX = "node-role.kubernetes.io/"
_WHAT = {METRICS_KIND: "usage", MQTT_KIND: "MQTT"}  # the live reports, as errors name them


def node_user(node: str) -> User:
    """The user a node's client certificate authenticates as."""
    return User(f"system:node:{node}", ("system:nodes", "system:authenticated"))


def role_labels(node: str, server_node: str) -> dict[str, str]:
    """The role labels the server gives `node` (`server_node`: the server's own node)."""
    if node == server_node:
        return {_ROLE_PREFIX + "control-plane": "true", _ROLE_PREFIX + "master": "true"}
    return {_ROLE_PREFIX + "edge": ""}


@contextlib.contextmanager
def _as_user(user: User | None) -> Iterator[None]:
    token = REQUEST_USER.set(user)
    try:
        yield
    finally:
        REQUEST_USER.reset(token)


class UpstreamWriter:
    """The writes a node may make: what the authorizer chain lets the node's user do, each
    run as that user. `server_node`: the server's own (embedded agent's) node name, "" if
    none; `usage`: where usage reports go; `report_listeners` are told each live report
    kept (kind, node, report)."""

    def __init__(self, registry: Registry, passwords: NodePasswords,
                 authorizer: AuthorizerChain, server_node: str = "",
                 usage: UsageStore | None = None, mqtt: MqttFigures | None = None,
                 report_listeners: set[Callable[[str, str, Any], None]] | None = None) -> None:
        self.registry = registry
        self.passwords = passwords  # a registering Node adopts its password Secret
        self.authorizer = authorizer
        self.server_node = server_node
        self.devices = DeviceStatusWriter(registry)
        self.usage = usage  # None: --disable metrics-server, reports are dropped
        self.mqtt = mqtt
        self.report_listeners = report_listeners if report_listeners is not None else set()
        # per node, the agent's part of the Node status this server stored last (cloudhub.py
        # drops a node's when its tunnel goes or its Node is deleted)
        self.agent_status: dict[str, AgentStatus] = {}

    async def write(self, node: str, msg: Message) -> None:
        """Write what `node` sent in `msg`; StatusError when it may not or cannot be."""
        plural, ns, name, sub = split_resource_key(msg.route.resource)
        body = msg.content if isinstance(msg.content, dict) else {}
        user = node_user(node)
        with _as_user(user):
            await self._write(user, node, msg, (plural, ns, name, sub), body)

    async def _write(self, user: User, node: str, msg: Message,
                     key: tuple[str, str | None, str, str], body: dict) -> None:
        plural, ns, name, sub = key
        allow = functools.partial(self.authorizer.authorize, user)  # 403 unless it may
        if plural == "nodes":
            allow("update" if sub else "create", "", "nodes", None, name, sub)
            await (self._node_status(node, body) if sub == "status"
                   else self._register_node(node, body))
        elif plural == "leases":
            allow("update", "coordination.k8s.io", "leases", ns, name)
            await self._renew_lease(node, body)
        elif plural == "pods" and sub == "status":
            allow("update", "", "pods", ns, name, "status")
            await self._pod_status(node, ns or "", name, body)
        elif plural == "pods" and not sub and msg.route.operation == OP_DELETE:
            allow("delete", "", "pods", ns, name)
            await self._pod_terminated(node, ns or "", name, body.get("uid") or "")
        elif plural == "events":
            allow("create", "", "events", ns or "default", None)
            await self._event(ns or "default", body)
        elif plural == DEVICES_KIND and sub == DEVICE_STATUS:
            allow("update", DEVICE_GROUP, "devices", ns or "default", name, "status")
            await self.devices.write(node, ns or "default", name, msg.content)
        elif plural == "persistentvolumes" and sub == VOLUME_CLEANED:
            allow("update", "", "persistentvolumes", None, name)
            await self._volume_cleaned(node, name, body.get("uid") or "")
        elif plural == METRICS_KIND:
            self._live_report(node, name, msg.content, plural, UsageReport.from_content,
                              self.usage.record if self.usage is not None else None)
        elif plural == MQTT_KIND:
            self._live_report(node, name, msg.content, plural, MqttSummary.from_content,
                              self.mqtt.record if self.mqtt is not None else None)
        else:
            raise errors.bad_request(f"unsupported up message {msg.route.resource}")

    def _live_report(self, node: str, name: str, content: object, kind: str,
                     parse: Callable[[object], object],
                     record: Callable[[str, Any], None] | None) -> None:
        """A report sent live (`kind` METRICS_KIND or MQTT_KIND): of the node itself only,
        kept by `record` (None: its add-on is off, the report is dropped)."""
        if name != node:
            raise errors.forbidden(f"node {node} may not report {_WHAT[kind]} of node {name}")
        if record is None:
            return
        try:
            report = parse(content)
        except ValueError as e:
            raise errors.bad_request(f"bad {_WHAT[kind]} report: {e}") from None
        record(node, report)
        for tell in list(self.report_listeners):
            tell(kind, node, report)

    async def _register_node(self, node: str, obj: dict) -> None:
        """Create or re-register the Node as the node (NodeRestriction judges its labels),
        then give it its role labels as the server."""
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
            await self._give_role(node)
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
        await self._give_role(node)
        if obj.get("status"):
            await self._node_status(node, obj["status"])
        await self.passwords.adopt(node)

    async def _give_role(self, node: str) -> None:
        role = role_labels(node, self.server_node)

        def label(cur: dict) -> dict | None:
            labels = cur["metadata"].setdefault("labels", {})
            # a role given before (by this or another server) or by an admin stands
            if any(k.startswith(_ROLE_PREFIX) for k in labels):
                return None
            labels.update(role)
            return cur
        with _as_user(None):  # the server's own write
            await self.registry.update_with(self.registry.served("", "nodes"), None, node,
                                            label)

    async def _node_status(self, node: str, status: dict) -> None:
        """Store the agent's part of its Node status (with the stored transition times) and
        remember what was stored of it."""
        res = self.registry.served("", "nodes")

        def put(cur: dict) -> dict:
            cur["status"] = merged_status(status, cur.get("status"), now_rfc3339())
            return cur
        written = await self.registry.update_with(res, None, node, put, subresource="status")
        if written is None or not isinstance(status, dict):
            self.agent_status.pop(node, None)
        else:
            self.agent_status[node] = AgentStatus.of(status, written)

    async def _renew_lease(self, node: str, spec: dict) -> None:
        res = self.registry.served("coordination.k8s.io", "leases")
        spec = {**spec, "holderIdentity": node}
        ns = "kube-node-lease"

        def renew(cur: dict) -> dict:
            cur["spec"] = {**(cur.get("spec") or {}), **spec}
            return cur
        # a renewal, every 10 s from every node: one read, not a look first and then another
        if await self.registry.update_with(res, ns, node, renew) is None:
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
            await self.registry.update_with(res, ns, node, renew)  # made meanwhile

    async def _pod_status(self, node: str, ns: str, name: str, body: dict) -> None:
        res = self.registry.served("", "pods")
        uid = body.get("uid")
        status = body.get("status") or {}

        def put(cur: dict) -> dict | None:
            if node_of(cur) != node:
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
        if cur is None or node_of(cur) != node or (uid and cur["metadata"].get("uid") != uid):
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

    async def _volume_cleaned(self, node: str, name: str, uid: str) -> None:
        """The node removed the directory of its deleted local-path volume: drop the cleanup
        finalizer, which lets the deletion finish."""
        res = self.registry.served("", "persistentvolumes")

        def drop(cur: dict) -> dict | None:
            if (uid and cur["metadata"].get("uid") != uid) or not awaits_cleanup(cur):
                return None  # another volume of that name, or done already
            if volume_node(cur) != node:
                raise errors.forbidden(f"node {node} may not clean up volume {name}")
            cur["metadata"]["finalizers"] = [f for f in cur["metadata"]["finalizers"]
                                             if f != CLEANUP_FINALIZER]
            return cur
        await self.registry.update_with(res, None, name, drop)

    async def _event(self, ns: str, event: dict) -> None:
        """Create the Event, or, for a repeat the agent aggregated under the same name, raise
        its count (tried first for a repeat: one write instead of a failed create and one).
        An older or equal count than the stored one changes nothing: a message resent after
        the duplicate window cannot count an Event twice."""
        res = self.registry.served("", "events")
        event.setdefault("metadata", {})["namespace"] = ns
        event.setdefault("firstTimestamp", now_rfc3339())
        event.setdefault("lastTimestamp", event["firstTimestamp"])
        name = event["metadata"].get("name") or ""

        def repeat(cur: dict) -> dict | None:
            if int(cur.get("count") or 1) >= int(event.get("count") or 1):
                return None
            for k in ("count", "lastTimestamp", "message"):
                if event.get(k) is not None:
                    cur[k] = event[k]
            return cur
        if int(event.get("count") or 1) > 1 and name and \
                await self.registry.try_get(res, ns, name) is not None:
            await self.registry.update_with(res, ns, name, repeat)
            return
        try:
            await self.registry.create(res, ns, event)
        except errors.StatusError as e:
            if e.code != 409:
                raise
            await self.registry.update_with(res, ns, name, repeat)
