"""NodeRestriction admission, as upstream's plug-in: what a node (system:node:NAME) may write
into its own Node, on top of what the Node authorizer lets it touch at all.

- Labels: a node may not set, change or remove labels under `node-restriction.kubernetes.io/`
  (they are for admins to pin workloads to trusted nodes), nor other labels in the
  `kubernetes.io` / `k8s.io` namespaces except the ones a kubelet sets about itself
  (hostname, os, arch, instance type, zone and region, `kubelet.kubernetes.io/*`,
  `node.kubernetes.io/*`; k3py.api.nodelabels): so a stolen node cannot call itself a
  control-plane node.
- Updates: a node may not change its taints or its pod CIDRs (the server owns them).
Other users and the server's own writes pass. Installed by bootstrap as a validator; it
reads the request's user from REQUEST_USER."""

from __future__ import annotations

from k3py.api import errors
from k3py.api.nodelabels import label_allowed_for_node
from k3py.api.resources import Resource
from k3py.server.apiserver.auth import REQUEST_USER

__all__ = ["NodeRestriction"]

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
