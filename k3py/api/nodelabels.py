"""Which labels a node may set on its own Node (upstream's NodeRestriction rule): read by the
server's NodeRestriction admission and by `k3py agent`'s --node-label check, so an agent that
asks for a label it would be refused stops at start with the reason, as a kubelet does."""

from __future__ import annotations

__all__ = ["label_allowed_for_node"]

_RESTRICTED_PREFIX = "node-restriction.kubernetes.io/"
_ALLOWED_LABELS = {
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os",
    "beta.kubernetes.io/instance-type", "beta.kubernetes.io/os", "beta.kubernetes.io/arch",
    "failure-domain.beta.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone",
    "topology.kubernetes.io/region", "topology.kubernetes.io/zone",
    "node.kubernetes.io/instance-type", "node.kubernetes.io/windows-build"}
_ALLOWED_PREFIXES = ("kubelet.kubernetes.io/", "node.kubernetes.io/")


def label_allowed_for_node(key: str) -> bool:
    """A label key a node may set on itself: not under `node-restriction.kubernetes.io/`, and
    in the `kubernetes.io` / `k8s.io` namespaces only the ones a kubelet sets about itself."""
    if key.startswith(_RESTRICTED_PREFIX):
        return False
    prefix, sep, _ = key.rpartition("/")
    if not sep:
        return True
    in_k8s = prefix in ("kubernetes.io", "k8s.io") or prefix.endswith(
        (".kubernetes.io", ".k8s.io"))
    return not in_k8s or key in _ALLOWED_LABELS or key.startswith(_ALLOWED_PREFIXES)
