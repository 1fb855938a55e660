"""The Node authorizer: what a node's credential (user system:node:NAME in group system:nodes)
may do through the API, with upstream's graph semantics, so a stolen node reveals only its own
pods' objects.

A node may
- read, create, update and delete its own Node (and its status) and its own Lease in
  kube-node-lease; list/watch them only by name (fieldSelector metadata.name=NAME);
- get the pods bound to it, list/watch pods only with fieldSelector spec.nodeName=NAME, update
  their status, delete and evict them;
- get the Secrets, ConfigMaps and PersistentVolumeClaims its pods reference (volumes,
  projected sources, env, envFrom, imagePullSecrets: k3py.api.podrefs), the PersistentVolumes
  bound to those claims and its own deleted local-path volumes (whose directories it removes:
  k3py.api.localpath; it may update those, to drop their cleanup finalizer), and request tokens of its pods' ServiceAccounts; list/watch of those
  only by name;
- get the `kubernetes.io/tls` Secrets named in spec.tls of the Ingresses the built-in ingress
  serves (server/edge/ingresssync.py; as K3s's Traefik may), list/watch them only by name;
- read every Service, Endpoints and EndpointSlice (the node's service proxy needs them all),
  Ingress and IngressClass (its ingress proxy), RuntimeClasses and CSIDrivers, and its own
  CSINode;
- read the KubeEdge Devices bound to it (get, or list/watch with spec.nodeName=NAME), update
  their status, and get the DeviceModels they use;
- create Events, CertificateSigningRequests, TokenReviews and SubjectAccessReviews.
Anything else gets no opinion here, and the chain denies it unless RBAC grants it.

The graph is read from the server's shared informers (pods indexed by node), so it is as fresh
as they are: a pod bound a moment ago may be refused for that moment, as upstream."""

from __future__ import annotations

from k3py.api.localpath import awaits_cleanup, volume_node
from k3py.api.podrefs import bound_volumes, pod_references
from k3py.server.apiserver.auth import Attributes
from k3py.server.controllers.base import NODE_INDEX, Informer, InformerFactory, pod_node
from k3py.server.edge.devicesync import DEVICE_GROUP, device_model, device_node
from k3py.server.edge.ingresssync import INGRESS_GROUP, IngressSecrets

__all__ = ["NodeAuthorizer"]

_READ = ("get", "list", "watch")
_WRITE_OWN = ("get", "list", "watch", "create", "update", "patch", "delete")
_READ_ALL = {("", "services"), ("", "endpoints"), ("discovery.k8s.io", "endpointslices"),
             (INGRESS_GROUP, "ingresses"), (INGRESS_GROUP, "ingressclasses"),
             ("node.k8s.io", "runtimeclasses"), ("storage.k8s.io", "csidrivers")}
_CREATE_ONLY = {("", "events"), ("events.k8s.io", "events"),
                ("authentication.k8s.io", "tokenreviews"),
                ("authorization.k8s.io", "subjectaccessreviews")}
_REFERENCED = ("secrets", "configmaps", "persistentvolumeclaims")


class NodeAuthorizer:
    def __init__(self, informers: InformerFactory) -> None:
        self.informers = informers
        self.pods = informers.informer("", "pods")
        self.pods.add_index(NODE_INDEX, pod_node)
        self.claims = informers.informer("", "persistentvolumeclaims")
        self.ingress_secrets = IngressSecrets(informers)
        self.volumes = informers.informer("", "persistentvolumes")

    def allows(self, attrs: Attributes) -> bool:
        node = attrs.user.node_name
        if node is None:
            return False
        key = (attrs.group, attrs.plural)
        if key in _READ_ALL:
            return attrs.verb in _READ
        if key in _CREATE_ONLY:
            return attrs.verb in ("create", "update", "patch") if "events" in key[1] \
                else attrs.verb == "create"
        if key == ("certificates.k8s.io", "certificatesigningrequests"):
            return attrs.verb in ("create", *_READ) and not attrs.subresource
        name = self._name(attrs)
        if key == ("", "nodes") or key == ("storage.k8s.io", "csinodes"):
            return name == node and attrs.verb in _WRITE_OWN and \
                attrs.subresource in ("", "status")
        if key == ("coordination.k8s.io", "leases"):
            return attrs.namespace == "kube-node-lease" and name == node and \
                attrs.verb in _WRITE_OWN and not attrs.subresource
        if attrs.group == "":
            if attrs.plural == "pods":
                return self._pod(attrs, node, name)
            if attrs.plural in _REFERENCED:
                if attrs.subresource:  # a claim's status (volume expansion)
                    verb_ok = (attrs.plural, attrs.subresource) == \
                        ("persistentvolumeclaims", "status") and \
                        attrs.verb in ("get", "update", "patch")
                else:
                    verb_ok = attrs.verb in _READ
                if not verb_ok or name is None:
                    return False
                ns = attrs.namespace or ""
                return self._referenced(node, attrs.plural, ns, name) or (
                    attrs.plural == "secrets" and not attrs.subresource
                    and self.ingress_secrets.served(ns, name))
            if attrs.plural == "persistentvolumes":
                if attrs.verb in ("update", "patch"):  # dropping its cleanup finalizer
                    return name is not None and not attrs.subresource and \
                        self._cleanup_of_node(node, name)
                return attrs.verb in _READ and name is not None and \
                    self._volume_of_node(node, name)
            if attrs.plural == "serviceaccounts":
                return attrs.subresource == "token" and attrs.verb == "create" and \
                    name is not None and \
                    self._referenced(node, "serviceaccounts", attrs.namespace or "", name)
            return False
        if attrs.group == DEVICE_GROUP:
            return self._device(attrs, node, name)
        return False

    @staticmethod
    def _name(attrs: Attributes) -> str | None:
        """The object's name: from the path, or for list/watch from metadata.name=."""
        if attrs.name is not None:
            return attrs.name
        return attrs.fields.get("metadata.name") if attrs.verb in ("list", "watch") else None

    def _bound_pod(self, node: str, namespace: str, name: str) -> bool:
        pod = self.pods.get(namespace, name)
        return pod is not None and pod_node(pod) == [node]

    def _pod(self, attrs: Attributes, node: str, name: str | None) -> bool:
        if attrs.verb in ("list", "watch") and attrs.name is None:
            return attrs.fields.get("spec.nodeName") == node
        if name is None or not self._bound_pod(node, attrs.namespace or "", name):
            return False
        if attrs.subresource == "status":
            return attrs.verb in ("get", "update", "patch")
        if attrs.subresource == "eviction":
            return attrs.verb == "create"
        return not attrs.subresource and attrs.verb in ("get", "list", "watch", "delete")

    def _referenced(self, node: str, plural: str, namespace: str, name: str) -> bool:
        return any((plural, name) in pod_references(pod)
                   for pod in self.pods.by_index(NODE_INDEX, node)
                   if (pod.get("metadata") or {}).get("namespace") == namespace)

    def _cleanup_of_node(self, node: str, volume: str) -> bool:
        """A deleted local-path volume on `node`, waiting for it to remove the directory."""
        pv = self.volumes.get(None, volume)
        return pv is not None and awaits_cleanup(pv) and volume_node(pv) == node

    def _volume_of_node(self, node: str, volume: str) -> bool:
        if self._cleanup_of_node(node, volume):
            return True
        for pod in self.pods.by_index(NODE_INDEX, node):
            ns = (pod.get("metadata") or {}).get("namespace") or ""
            if volume in bound_volumes(pod, lambda claim, ns=ns: self.claims.get(ns, claim)):
                return True
        return False

    def _device_informer(self, plural: str) -> Informer | None:
        try:
            return self.informers.informer(DEVICE_GROUP, plural)
        except KeyError:  # the CRD is not served (yet)
            return None

    def _device(self, attrs: Attributes, node: str, name: str | None) -> bool:
        if attrs.plural == "devices":
            if attrs.verb in ("list", "watch") and attrs.name is None:
                return attrs.fields.get("spec.nodeName") == node
            devices = self._device_informer("devices")
            dev = devices.get(attrs.namespace, name) if devices and name else None
            if dev is None or device_node(dev) != node:
                return False
            if attrs.subresource == "status":
                return attrs.verb in ("get", "update", "patch")
            return not attrs.subresource and attrs.verb in _READ
        if attrs.plural == "devicemodels" and attrs.verb in _READ and name is not None:
            devices = self._device_informer("devices")
            return devices is not None and any(
                device_node(d) == node and device_model(d) == name
                for d in devices.list(attrs.namespace))
        return False
