"""NodeRestriction admission, as upstream's plug-in: what a node (system:node:NAME) may write
into its own Node, on top of what the Node authorizer lets it touch at all.

- Labels: a node may not set, change or remove labels under `node-restriction.kubernetes.io/`
  (they are for admins to pin workloads to trusted nodes), nor other labels in the
  `kubernetes.io` / `k8s.io` namespaces except the ones a kubelet sets about itself
  (hostname, os, arch, instance type, zone and region, `kubelet.kubernetes.io/*`,
  `node.kubernetes.io/*`): so a stolen node cannot call itself a control-plane node.
- Updates: a node may not change its taints or its pod CIDRs (the server owns them).
Other users and the server's own writes pass. Installed by bootstrap as a validator; it
reads the request's user from REQUEST_USER."""

from __future__ import annotations

from k3py.api import errors
from k3py.api.resources import Resource
from k3py.server.apiserver.auth import REQUEST_USER

__all__ = ["NodeRestriction", "label_allowed_for_node"]

_RESTRICTED_PREFIX = "node-restriction.kubernetes.io/"
_ALLOWED_LABELS = {
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os",
    "beta.kubernetes.io/instance-type", "beta.kubernetes.io/os", "beta.kubernetes.io/arch",
    "failure-domain.beta.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone",
    "topology.kubernetes.io/region", "topology.kubernetes.io/zone",
    "node.kubernetes.io/instance-type", "node.kubernetes.io/windows-build"}
_ALLOWED_PREFIXES = ("kubelet.kubernetes.io/", "node.kubernetes.io/")


def label_allowed_for_node(key: str) -> bool:
    """A label key a node may set on itself."""
    if key.startswith(_RESTRICTED_PREFIX):
        return False
    prefix, sep, _ = key.rpartition("/")
    if not sep:
        return True
    in_k8s = prefix in ("kubernetes.io", "k8s.io") or prefix.endswith(
        (".kubernetes.io", ".k8s.io"))
    return not in_k8s or key in _ALLOWED_LABELS or key.startswith(_ALLOWED_PREFIXES)


def _changed(old: dict, new: dict) -> set[str]:
    return {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}


class NodeRestriction:
    def __call__(self, res: Resource, obj: dict, old: dict | None) -> list:
        user = REQUEST_USER.get()
        node = user.node_name if user is not None else None
        if node is None or res.group != "" or res.plural != "nodes":
            return []
        name = (obj.get("metadata") or {}).get("name") or ""
        labels = (obj.get("metadata") or {}).get("labels") or {}
        old_labels = ((old or {}).get("metadata") or {}).get("labels") or {}
        touched = set(labels) if old is None else _changed(old_labels, labels)
        bad = sorted(k for k in touched if not label_allowed_for_node(k))
        if bad:
            raise errors.forbidden(
                f'node "{node}" is not allowed to {"set" if old is None else "modify"} '
                f'labels: {", ".join(bad)}', "", "nodes", name)
        if old is not None:
            spec, old_spec = obj.get("spec") or {}, old.get("spec") or {}
            for field, what in (("taints", "taints"), ("podCIDRs", "pod CIDRs"),
                                ("podCIDR", "pod CIDRs")):
                if spec.get(field) != old_spec.get(field):
                    raise errors.forbidden(f'node "{node}" is not allowed to modify {what}',
                                           "", "nodes", name)
        return []
