"""A local-path PersistentVolume as both ends see it: the provisioner's name, the finalizer
that keeps a deleted volume until its node has removed the directory, the node it lives on,
and which directory that node may remove (only one directly under its storage path).

Pure; the server's provisioner (server/controllers/localpath.py) and tunnel ends
(server/edge/) and the agent's volume cleanup (agent/storage/) share it."""

from __future__ import annotations

import os

__all__ = ["PROVISIONER", "ANN_PROVISIONED_BY", "CLEANUP_FINALIZER", "is_local_path",
           "volume_node", "directory_name", "removable_directory", "awaits_cleanup"]

PROVISIONER = "rancher.io/local-path"  # K3s's name, so manifests written for K3s work
ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
# on every volume the provisioner makes: the volume's deletion waits for its node to remove
# the directory and drop this finalizer (the node may be offline when the claim goes)
CLEANUP_FINALIZER = "k3py.io/local-path-directory"


def is_local_path(volume: dict) -> bool:
    md = volume.get("metadata") or {}
    return (md.get("annotations") or {}).get(ANN_PROVISIONED_BY) == PROVISIONER


def volume_node(volume: dict) -> str:
    """The node a local-path volume lives on (its required node affinity on
    kubernetes.io/hostname, one value, as the provisioner writes it); "" otherwise."""
    terms = ((((volume.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {})
             .get("nodeSelectorTerms") or [])
    if len(terms) != 1:
        return ""
    exprs = terms[0].get("matchExpressions") or []
    if len(exprs) != 1:
        return ""
    e = exprs[0]
    values = e.get("values") or []
    if e.get("key") != "kubernetes.io/hostname" or e.get("operator") != "In" or \
            len(values) != 1 or not isinstance(values[0], str):
        return ""
    return values[0]


def directory_name(volume_name: str, namespace: str, claim: str) -> str:
    """local-path-provisioner's directory name: pvc-<claim uid>_<namespace>_<claim>."""
    return f"{volume_name}_{namespace}_{claim}"


def awaits_cleanup(volume: dict) -> bool:
    """A deleted local-path volume whose directory its node has not removed yet."""
    md = volume.get("metadata") or {}
    return bool(md.get("deletionTimestamp")) and \
        CLEANUP_FINALIZER in (md.get("finalizers") or []) and is_local_path(volume)


def removable_directory(volume: dict, storage_path: str) -> str | None:
    """The directory of a deleted local-path volume its node removes: its hostPath, only if
    that is <storage_path>/pvc-<uid>_<namespace>_<claim> for this very volume and claim;
    None otherwise (the node leaves anything else alone)."""
    if not awaits_cleanup(volume) or not storage_path or not os.path.isabs(storage_path):
        return None
    spec = volume.get("spec") or {}
    path = (spec.get("hostPath") or {}).get("path") or (spec.get("local") or {}).get("path")
    ref = spec.get("claimRef") or {}
    name = (volume.get("metadata") or {}).get("name") or ""
    if not isinstance(path, str) or not name.startswith("pvc-") or \
            not ref.get("namespace") or not ref.get("name"):
        return None
    expected = os.path.join(os.path.normpath(storage_path),
                            directory_name(name, ref["namespace"], ref["name"]))
    return path if path == expected and "/" not in directory_name(
        name, ref["namespace"], ref["name"]) else None
