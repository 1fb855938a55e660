"""Downstream sync: what each node must hold (its pods; the configmaps, secrets, claims, volumes
and tokens they need; its devices; the deleted local-path volumes whose directories it must
remove; every Service, EndpointSlice and Ingress; unless NetworkPolicy is disabled, every
NetworkPolicy and, while there is one, the namespaces' and pods' views its rules need) as one
snapshot on a full sync, then one object message per change.

Fed by the server's informers; queues into CloudHub's node sessions (sessions.py); the tokens
come from podtokens.py, the devices from devicesync.py, the ingresses and their TLS secrets
from ingresssync.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine

from k3py.api.localpath import awaits_cleanup, volume_node
from k3py.api.objects import name_of, namespace_of
from k3py.api.podrefs import bound_volumes, pod_references
from k3py.server.controllers.base import NODE_INDEX, Informer, InformerFactory, pod_node
from k3py.server.edge.devicesync import DeviceFeed
from k3py.server.edge.ingresssync import IngressFeed
from k3py.server.edge.podtokens import PodTokens
from k3py.server.edge.sessions import NodeSession
from k3py.server.serviceaccounts import TokenIssuer
from k3py.tunnel import framing
from k3py.tunnel.message import (
    CLOUD,
    GROUP_RESOURCE,
    OP_DELETE,
    OP_INSERT,
    OP_SYNC,
    OP_UPDATE,
    Message,
    new_message,
    resource_key,
)
from k3py.tunnel.protocol import (
    CLUSTER_WIDE_KINDS,
    NETWORK_POLICY_KINDS,
    POD_PEERS_KIND,
    POD_TOKENS_KIND,
    POLICY_PEER_KINDS,
)

__all__ = ["DownstreamSync", "referenced_objects", "node_of", "object_message",
           "node_route_view", "routable", "addressed", "namespace_view", "pod_peer_view"]


_REFERENCED = ("configmaps", "secrets", "persistentvolumeclaims")


def referenced_objects(pod: dict) -> set[tuple[str, str]]:
    """(plural, name) of the configmaps, secrets and claims a pod needs, in the pod's
    namespace: the ones the Node authorizer lets its node read (k3py.api.podrefs, one
    definition for both)."""
    return {ref for ref in pod_references(pod) if ref[0] in _REFERENCED}


# Bound pods by their node and what they reference ("<node>/configmaps/<ns>/<name>"...):
# whether a node holds a ConfigMap, Secret or claim through its pods, without every pod's
# references at each change of one nor each pod of the cluster that references it (a
# namespace's kube-root-ca.crt: all of them)
REF_INDEX = "node-references"


def ref_key(node: str, plural: str, ns: str, name: str) -> str:
    return f"{node}/{plural}/{ns}/{name}"


def pod_reference_keys(pod: dict) -> list[str]:
    node = node_of(pod)
    if not node:
        return []  # (no node holds anything for it)
    ns = namespace_of(pod)
    return [ref_key(node, plural, ns, name) for plural, name in referenced_objects(pod)]


# what a write of the pod's status alone changes besides the status
_STATUS_WRITE_METADATA = ("resourceVersion", "managedFields")


def status_only(old: dict | None, new: dict) -> bool:
    """True if `new` differs from `old` only by what a status write changes (its pod IP
    excepted: the downward API's status.podIP reads it from the node's copy)."""
    if old is None:
        return False
    if (old.get("status") or {}).get("podIP") != (new.get("status") or {}).get("podIP"):
        return False
    return _without_status(old) == _without_status(new)


def _without_status(pod: dict) -> dict:
    md = {k: v for k, v in (pod.get("metadata") or {}).items()
          if k not in _STATUS_WRITE_METADATA}
    return {**{k: v for k, v in pod.items() if k != "status"}, "metadata": md}


def node_route_view(node: dict) -> dict:
    """What every node needs of each Node for the pod network's routes (agent/network/):
    its name, pod CIDRs and addresses. Not the whole Node: its status changes at each report,
    and a node may read only its own Node through the API (as upstream kubelets; the routes
    are the agent's network part's business, as flannel's own identity in K3s)."""
    md, spec = node.get("metadata") or {}, node.get("spec") or {}
    view: dict = {"metadata": {"name": md.get("name") or "", "uid": md.get("uid") or ""},
                  "spec": {k: spec[k] for k in ("podCIDR", "podCIDRs") if spec.get(k)},
                  "status": {"addresses": (node.get("status") or {}).get("addresses") or []}}
    return view


def namespace_view(ns: dict) -> dict:
    """What a node's NetworkPolicy rules need of a Namespace: its name and labels."""
    md = ns.get("metadata") or {}
    return {"metadata": {"name": md.get("name") or "", "uid": md.get("uid") or "",
                         "labels": md.get("labels") or {}}}


_FINISHED = ("Succeeded", "Failed")  # a finished pod's IP may be another's already


def pod_peer_view(pod: dict) -> dict:
    """What a node's NetworkPolicy rules need of any pod of the cluster (as a peer, or to
    resolve a named port): name, labels, node, IP, whether it finished, and named container
    ports (so a pod's status reports change it only when its IP comes). Not the
    pod (its env, volumes, secrets' names): the Node authorizer lets a node read only its own
    pods, and this is the least of the others that policies need."""
    md, spec, status = (pod.get(k) or {} for k in ("metadata", "spec", "status"))
    ports = [[{k: p[k] for k in ("name", "containerPort", "protocol") if k in p}
              for p in c.get("ports") or [] if p.get("name")]
             for c in spec.get("containers") or []]
    view_spec: dict = {"nodeName": spec.get("nodeName") or "",
                       "containers": [{"ports": p} for p in ports if p]}
    if spec.get("hostNetwork"):
        view_spec["hostNetwork"] = True
    return {"metadata": {"namespace": md.get("namespace") or "", "name": md.get("name") or "",
                         "uid": md.get("uid") or "", "labels": md.get("labels") or {}},
            "spec": view_spec,
            "status": {"podIP": status.get("podIP") or "",
                       **({"podIPs": status["podIPs"]} if len(status.get("podIPs") or []) > 1
                          else {}),
                       **({"phase": status["phase"]} if status.get("phase") in _FINISHED
                          else {})}}


def routable(node: dict) -> bool:
    """A Node's route view goes to the nodes once the Node has a pod CIDR: before, there is no
    route to it, and a view sent at its registration then again with its CIDR would be two
    messages to every node for each node that joins."""
    spec = node.get("spec") or {}
    return bool(spec.get("podCIDR") or spec.get("podCIDRs"))


def addressed(pod: dict) -> bool:
    """A pod's peer view goes to the nodes once the pod has an IP: policy rules match peers by
    their IPs, and a view at its creation, again at its binding, then with its IP would be
    three messages to every node for each pod."""
    return bool((pod.get("status") or {}).get("podIP"))


_VIEWS = {"nodes": node_route_view, "namespaces": namespace_view, POD_PEERS_KIND: pod_peer_view}
# the kinds every node gets only once an object is of use to it (until then they are held back)
_SENT_WHEN = {"nodes": routable, POD_PEERS_KIND: addressed}


def _sent(plural: str, obj: dict | None) -> bool:
    if obj is None:
        return False
    when = _SENT_WHEN.get(plural)
    return when is None or when(obj)


def _view(plural: str, obj: dict) -> dict:
    view = _VIEWS.get(plural)
    return view(obj) if view is not None else obj


def node_of(pod: dict | None) -> str:
    """The node a pod is bound to, "" if none."""
    return ((pod or {}).get("spec") or {}).get("nodeName") or ""


def object_message(plural: str, etype: str, obj: dict) -> Message:
    """A reliable message for one object change; the key lets a newer change of the same
    object supersede an unACKed older one."""
    ns, name = namespace_of(obj), name_of(obj)
    op = {"ADDED": OP_INSERT, "MODIFIED": OP_UPDATE}.get(etype, OP_DELETE)
    key = resource_key(plural, ns, name)
    return new_message(source=CLOUD, group=GROUP_RESOURCE, operation=op, resource=key,
                       content=obj, key=key,
                       resource_version=(obj.get("metadata") or {}).get("resourceVersion", ""))


class DownstreamSync:
    """Pod, configmap, secret (and service account) informers feeding the node sessions;
    `start` creates them on the factory, whose owner stops them."""

    def __init__(self, informers: InformerFactory, sessions: dict[str, NodeSession],
                 issuer: TokenIssuer | None, connected: Callable[[str], bool], *,
                 network_policy: bool = True) -> None:
        self._informers = informers
        self.network_policy = network_policy  # False: --disable-network-policy
        self.sessions = sessions
        self.issuer = issuer  # pods' service-account tokens go down with them (podtokens.py)
        self._connected = connected
        self.tokens: PodTokens | None = None
        self.pods: Informer
        self.refs: dict[str, Informer] = {}  # configmaps, secrets, claims by plural
        self.volumes: Informer
        self.device_feed: DeviceFeed | None = None
        self.ingress_feed: IngressFeed | None = None
        self.cluster_wide: dict[str, Informer] = {}  # services, endpointslices: to every node
        # what every node's snapshot holds of each cluster-wide kind, made once and dropped
        # when one of them goes down to the nodes (a thousand snapshots after a server restart
        # would otherwise make a thousand times the same views of every pod and Node)
        self._every_node: dict[str, list[dict]] = {}
        # the nodes are being sent the namespaces' and pods' views: a NetworkPolicy exists
        self.peers_sent = False
        self._tasks: set[asyncio.Task] = set()

    def start(self) -> None:
        self.pods = self._informers.informer("", "pods")
        self.pods.add_index(NODE_INDEX, pod_node)  # the one definition: the informer is shared
        self.pods.add_index(REF_INDEX, pod_reference_keys)
        self.pods.add_handler(self._on_pod)
        self.refs = {}
        for plural in _REFERENCED:
            inf = self.refs[plural] = self._informers.informer("", plural)
            inf.add_handler(lambda t, o, n, plural=plural: self._on_ref(plural, t, o, n))
        self.volumes = self._informers.informer("", "persistentvolumes")
        self.volumes.add_handler(self._on_volume)
        self.cluster_wide = {}  # (reset: start may run again on a restarted hub)
        self._every_node = {}
        self.peers_sent = False
        for plural in CLUSTER_WIDE_KINDS:
            group = "discovery.k8s.io" if plural == "endpointslices" else ""
            inf = self.cluster_wide[plural] = self._informers.informer(group, plural)
            inf.add_handler(lambda t, o, n, plural=plural: self._to_every_node(plural, t, o, n))
        if self.network_policy:
            self._start_network_policy()
        self.device_feed = DeviceFeed(self._informers, self.send_object)
        self.device_feed.start()
        self.ingress_feed = IngressFeed(
            self._informers, self.send_object, lambda: list(self.sessions),
            lambda node, ns, name: self._node_references(node, "secrets", ns, name))
        self.ingress_feed.start()
        if self.issuer is not None:
            self._start_tokens(self.issuer)

    async def stop(self) -> None:
        if self.device_feed is not None:
            await self.device_feed.stop()
        for task in list(self._tasks):
            task.cancel()

    def _start_network_policy(self) -> None:
        """Every node gets the policies and, while there is one, the namespaces' and the pods'
        views (their pods come from the pod informer, under their own kind)."""
        policies = self._informers.informer("networking.k8s.io", "networkpolicies")
        self.cluster_wide["networkpolicies"] = policies
        namespaces = self.cluster_wide["namespaces"] = self._informers.informer("", "namespaces")
        namespaces.add_handler(lambda t, o, n: self._to_every_node("namespaces", t, o, n))
        self.cluster_wide[POD_PEERS_KIND] = self.pods
        self.pods.add_handler(lambda t, o, n: self._to_every_node(POD_PEERS_KIND, t, o, n))
        policies.add_handler(self._on_policy)  # last: it replays cached policies at once

    def _spawn(self, coro: Coroutine) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_tokens(self, issuer: TokenIssuer) -> None:
        accounts = self._informers.informer("", "serviceaccounts")

        def account_uid(ns: str, name: str) -> str:
            return ((accounts.get(ns, name) or {}).get("metadata") or {}).get("uid") or ""

        def known_account_uid(ns: str, name: str) -> str | None:
            return account_uid(ns, name) if accounts.synced.is_set() else None

        def pod_alive(ns: str, name: str, uid: str) -> bool | None:
            if not self.pods.synced.is_set():
                return None
            pod = self.pods.get(ns, name)
            return pod is not None and pod["metadata"].get("uid") == uid

        def send(node: str, obj: dict) -> None:
            if node in self.sessions:
                self.sessions[node].send(object_message(POD_TOKENS_KIND, "MODIFIED", obj))
        self.tokens = PodTokens(issuer, account_uid)
        issuer.pod_alive = pod_alive
        issuer.account_uid = known_account_uid
        self._spawn(self.tokens.refresh_loop(lambda: [n for n in self.sessions
                                                      if self._connected(n)],
                                             lambda n: self.pods.by_index(NODE_INDEX, n), send))

    # ---------------------------------------------------------------- what a node holds

    def _refs_for_node(self, node: str) -> set[tuple[str, str, str]]:
        out: set[tuple[str, str, str]] = set()
        for pod in self.pods.by_index(NODE_INDEX, node):
            ns = namespace_of(pod)
            out.update((plural, ns, name) for plural, name in referenced_objects(pod))
        return out

    def _node_references(self, node: str, plural: str, ns: str, name: str) -> bool:
        """Whether `node` has a pod that references this ConfigMap, Secret or claim."""
        return bool(self.pods.by_index(REF_INDEX, ref_key(node, plural, ns, name)))

    def _held_through_other_pods(self, node: str, plural: str, ns: str, name: str,
                                 pod: dict) -> bool:
        """Whether another pod of `node` than `pod` references this object: the node was
        sent it with that pod (or in its snapshot) and each change of it since (_on_ref),
        and it keeps it (a node drops such objects only with a full sync), so it holds it."""
        uid = (pod.get("metadata") or {}).get("uid")
        return any((p.get("metadata") or {}).get("uid") != uid
                   for p in self.pods.by_index(REF_INDEX, ref_key(node, plural, ns, name)))

    def _ref_object(self, plural: str, ns: str, name: str) -> dict | None:
        return self.refs[plural].get(ns, name)

    def _pod_volumes(self, pod: dict) -> set[str]:
        """The PersistentVolumes bound to the claims `pod` uses."""
        claims, ns = self.refs["persistentvolumeclaims"], namespace_of(pod)
        return bound_volumes(pod, lambda name: claims.get(ns, name))

    def _volumes_for_node(self, node: str) -> set[str]:
        """The volumes of its pods' claims, and its deleted local-path volumes whose
        directories it has to remove (also after having been offline at the deletion)."""
        out = {name_of(v) for v in self.volumes.list()
               if awaits_cleanup(v) and volume_node(v) == node}
        for pod in self.pods.by_index(NODE_INDEX, node):
            out |= self._pod_volumes(pod)
        return out

    async def synced(self) -> None:
        """Every cache a snapshot is made from has been filled (so a first snapshot is not
        missing, say, the ConfigMap a node's pod needs while that cache still fills)."""
        for inf in (self.pods, *self.refs.values(), self.volumes, *self.cluster_wide.values()):
            await inf.synced.wait()

    def snapshot(self, node: str) -> Message:
        """Everything `node` must hold, in one OP_SYNC message (a full sync)."""
        pods = self.pods.by_index(NODE_INDEX, node)
        content: dict[str, list[dict]] = {"pods": pods, **{k: [] for k in _REFERENCED}}
        if self.tokens is not None:
            content[POD_TOKENS_KIND] = [o for o in map(self.tokens.object_for, pods) if o]
        for plural, ns, name in sorted(self._refs_for_node(node)):
            obj = self._ref_object(plural, ns, name)
            if obj is not None:
                content[plural].append(obj)
        content["persistentvolumes"] = [v for v in map(lambda n: self.volumes.get(None, n),
                                                       sorted(self._volumes_for_node(node))) if v]
        if self.device_feed is not None:
            content.update(self.device_feed.snapshot(node))
        content.update({k: [] for k in NETWORK_POLICY_KINDS})  # (disabled: none held)
        for plural in self.cluster_wide:
            if self.peers_sent or plural not in POLICY_PEER_KINDS:
                content[plural] = list(self._held_by_every_node(plural))
        if self.ingress_feed is not None:
            ingress = self.ingress_feed.snapshot()
            have = {(namespace_of(s), name_of(s)) for s in content["secrets"]}
            content["secrets"] += [s for s in ingress.pop("secrets")
                                   if (namespace_of(s), name_of(s)) not in have]
            content.update(ingress)
        return new_message(source=CLOUD, group=GROUP_RESOURCE, operation=OP_SYNC,
                           content=content, key="sync")

    def _held_by_every_node(self, plural: str) -> list[dict]:
        held = self._every_node.get(plural)
        if held is None:
            held = self._every_node[plural] = [_view(plural, o) for o in
                                               self.cluster_wide[plural].list()
                                               if _sent(plural, o)]
        return held

    # ---------------------------------------------------------------- changes

    def send_object(self, node: str, plural: str, etype: str, obj: dict) -> None:
        """Queue one object change for a node that has a session (devices, device models)."""
        session = self.sessions.get(node)
        if session is not None:
            session.send(object_message(plural, etype, obj))

    def _on_pod(self, etype: str, old: dict | None, new: dict | None) -> None:
        before, after = node_of(old), node_of(new)
        if before and before != after and before in self.sessions:
            self.sessions[before].send(object_message("pods", "DELETED", old))
        if etype == "DELETED" and self.tokens is not None:
            self._pod_tokens_gone(new or old)
        if after and after in self.sessions and new is not None:
            session = self.sessions[after]
            arrived = etype == "ADDED" or before != after
            if etype == "MODIFIED" and not arrived and status_only(old, new):
                return  # the node's own status report coming back: it has it already
            if etype != "DELETED":
                if self.tokens is not None and arrived:
                    tokens = self.tokens.object_for(new)  # new to this node: tokens first
                    if tokens is not None:
                        session.send(object_message(POD_TOKENS_KIND, "MODIFIED", tokens))
                # referenced objects first, so the agent has them when it starts the pod (a
                # change of one of them goes down by itself: _on_ref), unless the node holds
                # them already (each pod of a namespace names its kube-root-ca.crt)
                refs = referenced_objects(new)
                if not arrived and old is not None:
                    refs -= referenced_objects(old)
                ns = namespace_of(new)
                for plural, name in sorted(refs):
                    if self._held_through_other_pods(after, plural, ns, name, new):
                        continue
                    obj = self._ref_object(plural, ns, name)
                    if obj is not None:
                        session.send(object_message(plural, "MODIFIED", obj))
                volumes = self._pod_volumes(new)
                if not arrived and old is not None:
                    volumes -= self._pod_volumes(old)
                self._send_volumes(session, volumes)
            session.send(object_message("pods", etype, new))

    def _pod_tokens_gone(self, pod: dict | None) -> None:
        if pod is None or self.tokens is None:
            return
        self.tokens.forget(pod["metadata"].get("uid") or "")
        node = node_of(pod)
        if node in self.sessions:
            self.sessions[node].send(object_message(
                POD_TOKENS_KIND, "DELETED", self.tokens.deleted_object(pod)))

    def _on_policy(self, etype: str, old: dict | None, new: dict | None) -> None:
        """A NetworkPolicy goes to every node. The first one (the informer's cache holds it
        already) goes after every namespace's and pod's view, so that no node enforces it
        without its peers; the last one's deletion goes before their removal."""
        exist = bool(self.cluster_wide["networkpolicies"].cache)
        if exist and not self.peers_sent:
            self.peers_sent = True
            self._send_peer_views()
        self._to_every_node("networkpolicies", etype, old, new)
        if not exist and self.peers_sent:
            self.peers_sent = False
            self._send_peer_views()

    def _send_peer_views(self) -> None:
        """Every node's namespaces' and pods' views replaced by the current ones (none if no
        policy exists): one partial sync message, encoded once. Its key makes it supersede an
        older one still unACKed (a node offline while policies came and went), and the views'
        changes still unACKed are dropped: resent after it on a live link, an older one would
        undo it."""
        content = {k: self._held_by_every_node(k) if self.peers_sent else []
                   for k in POLICY_PEER_KINDS}
        msg = framing.shared(new_message(source=CLOUD, group=GROUP_RESOURCE, operation=OP_SYNC,
                                         content=content, key="sync-policy-peers"))
        views = tuple(f"{kind}/" for kind in POLICY_PEER_KINDS)
        for session in self.sessions.values():
            session.queue.outbox.drop_keyed(views)  # resent after the sync, they'd undo it
            session.send(msg)

    def _to_every_node(self, plural: str, etype: str, old: dict | None,
                       new: dict | None) -> None:
        """Services, EndpointSlices and the Nodes' route views: every node holds them all
        (its DNS, service rules and pod routes). A Node goes down only when its view
        changed, not at each status report; a Node or pod held back (_SENT_WHEN) goes down
        when it is first of use, and goes away if it stops being so. The namespaces' and
        pods' views go only while a NetworkPolicy exists (_on_policy)."""
        self._every_node.pop(plural, None)  # (first: whatever follows, the cache may be stale)
        if plural in POLICY_PEER_KINDS and not self.peers_sent:
            return
        if etype == "DELETED" and old is None:
            old = new  # (not in the cache: its last form is what the nodes may hold)
        was, now = _sent(plural, old), etype != "DELETED" and _sent(plural, new)
        if not was and not now:
            return
        if not now:
            etype, obj = "DELETED", _view(plural, old)  # (the form the nodes hold)
        else:
            obj = _view(plural, new)
            if was and _view(plural, old) == obj:
                return
            etype = "MODIFIED" if was else "ADDED"
        msg = framing.shared(object_message(plural, etype, obj))
        for session in self.sessions.values():
            session.send(msg)

    def _on_ref(self, plural: str, etype: str, old: dict | None, new: dict | None) -> None:
        obj = new or old
        if obj is None:
            return
        ns, name = namespace_of(obj), name_of(obj)
        volume = ((new or {}).get("spec") or {}).get("volumeName") \
            if plural == "persistentvolumeclaims" and etype != "DELETED" else None
        if volume == ((old or {}).get("spec") or {}).get("volumeName"):
            volume = None  # (bound already: its volume went down with it)
        for node, session in self.sessions.items():
            if self._node_references(node, plural, ns, name):
                if volume:  # the claim just bound: its volume first, the pod waits for both
                    self._send_volumes(session, {volume})
                session.send(object_message(plural, etype, obj))

    def _send_volumes(self, session: NodeSession, names: set[str]) -> None:
        for name in sorted(names):
            volume = self.volumes.get(None, name)
            if volume is not None:
                session.send(object_message("persistentvolumes", "MODIFIED", volume))

    def _on_volume(self, etype: str, old: dict | None, new: dict | None) -> None:
        """A volume goes to the nodes whose pods' claims are bound to it, and (deleted) to
        its own node, which removes its directory; a volume gone, to both as well."""
        obj = new or old
        if obj is None:
            return
        name = name_of(obj)
        cleanup = volume_node(obj) if awaits_cleanup(obj) or \
            (etype == "DELETED" and awaits_cleanup(old or obj)) else ""
        for node, session in self.sessions.items():
            if node == cleanup or name in self._volumes_for_node(node):
                session.send(object_message("persistentvolumes", etype, obj))
