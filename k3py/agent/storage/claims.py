"""A pod's claim volume on this node: claim -> bound PersistentVolume -> the host directory to
bind-mount (hostPath or local), all read from metamanager, so a pod is recreated with its
volume while the server is away.

A local-path volume's directory is made on first use with mode 0777, as K3s's
local-path-provisioner's helper does (`mkdir -m 0777 -p`), so a pod running as any user can
write to it; another hostPath volume follows its `type` (DirectoryOrCreate makes it, Directory
must exist). The subPath directories the pod's mounts of it name are made too, with the
volume directory's mode, as the kubelet does (podman refuses to mount a missing source).
Called by agent/pods/podspec.py when a pod's volumes are prepared."""

from __future__ import annotations

import os
import stat

from k3py.agent.metamanager import MetaManager
from k3py.api.localpath import is_local_path
from k3py.api.podrefs import volume_claim_name

__all__ = ["VolumeNotReady", "claim_directory", "make_sub_paths"]

LOCAL_PATH_MODE = 0o777


class VolumeNotReady(Exception):
    """The pod's volume cannot be mounted yet (its claim is not bound, its volume not here):
    the pod waits in ContainerCreating and its start is retried."""

    def __init__(self, volume: str, message: str) -> None:
        super().__init__(message)
        self.volume = volume


def claim_directory(pod: dict, vol: dict, meta: MetaManager) -> str | None:
    """The host directory of a persistentVolumeClaim (or ephemeral) volume, made if it has to
    be; None for a volume of another kind; VolumeNotReady while it cannot be mounted."""
    claim_name = volume_claim_name(pod, vol)
    if not claim_name:
        return None
    name = vol.get("name") or ""
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    claim = meta.get("persistentvolumeclaims", ns, claim_name)
    if claim is None:
        raise VolumeNotReady(name, f'persistentvolumeclaim "{claim_name}" not found')
    volume_name = (claim.get("spec") or {}).get("volumeName") or ""
    phase = (claim.get("status") or {}).get("phase") or "Pending"
    if not volume_name or phase != "Bound":
        raise VolumeNotReady(name, f'persistentvolumeclaim "{claim_name}" is not bound '
                                   f'(phase {phase})')
    volume = meta.get("persistentvolumes", "", volume_name)
    if volume is None:
        raise VolumeNotReady(name, f'persistentvolume "{volume_name}" of claim '
                                   f'"{claim_name}" not found')
    spec = volume.get("spec") or {}
    if "hostPath" in spec:
        path = (spec["hostPath"] or {}).get("path") or ""
        kind = (spec["hostPath"] or {}).get("type") or ""
    elif "local" in spec:
        path, kind = (spec["local"] or {}).get("path") or "", "Directory"
    else:
        raise VolumeNotReady(name, f'persistentvolume "{volume_name}": only hostPath and '
                                   f"local volumes can be mounted on this node")
    if not os.path.isabs(path):
        raise VolumeNotReady(name, f'persistentvolume "{volume_name}": path {path!r} is not '
                                   f"absolute")
    if is_local_path(volume):
        _make_local_path(path)
    elif kind == "DirectoryOrCreate":
        os.makedirs(path, exist_ok=True)
    elif kind == "Directory" and not os.path.isdir(path):
        raise VolumeNotReady(name, f'persistentvolume "{volume_name}": {path} is not a '
                                   f"directory")
    return path


def make_sub_paths(pod: dict, volume: str, path: str) -> None:
    """Make the missing subPath directories of `volume` (at `path`) that the pod's containers
    mount; a subPath leaving the volume is skipped (validation refuses those)."""
    spec = pod.get("spec") or {}
    mode = stat.S_IMODE(os.stat(path).st_mode)
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for m in c.get("volumeMounts") or []:
            sub = m.get("subPath") or ""
            rel = os.path.normpath(sub) if m.get("name") == volume and sub else ""
            if not rel or rel.startswith("..") or os.path.isabs(rel):
                continue
            target = os.path.join(path, rel)
            if not os.path.lexists(target):
                os.makedirs(target, exist_ok=True)
                os.chmod(target, mode)


def _make_local_path(path: str) -> None:
    if os.path.isdir(path):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    os.chmod(path, LOCAL_PATH_MODE)  # mkdir's mode goes through the umask
