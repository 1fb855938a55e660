"""What a pod references by name in its own namespace: the ConfigMaps, Secrets,
PersistentVolumeClaims and ServiceAccount its kubelet needs to run it (upstream's node graph
edges: volumes, projected sources, env and envFrom, imagePullSecrets, ephemeral volumes'
claims named <pod>-<volume>, the pod's service account), and the PersistentVolumes bound to
those claims.

The one definition for the Node authorizer (server/nodeauthz.py), what goes down the tunnel
to a node (server/edge/downstream.py) and the agent's claim volumes (agent/pods/podspec.py)."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["pod_references", "volume_claim_name", "bound_volumes"]


def volume_claim_name(pod: dict, vol: dict) -> str:
    """The claim behind one of the pod's volumes: a persistentVolumeClaim's claimName, an
    ephemeral volume's <pod>-<volume> (made by the ephemeral volume controller); "" if none."""
    if isinstance(vol.get("persistentVolumeClaim"), dict):
        name = vol["persistentVolumeClaim"].get("claimName")
        return name if isinstance(name, str) else ""
    pod_name = (pod.get("metadata") or {}).get("name") or ""
    if isinstance(vol.get("ephemeral"), dict) and pod_name and vol.get("name"):
        return f"{pod_name}-{vol['name']}"
    return ""


def pod_references(pod: dict) -> set[tuple[str, str]]:
    """(plural, name) of each object `pod` references, in the pod's namespace."""
    spec = pod.get("spec") or {}
    refs: set[tuple[str, str]] = set()

    def add(plural: str, name: object) -> None:
        if isinstance(name, str) and name:
            refs.add((plural, name))
    for vol in spec.get("volumes") or []:
        add("configmaps", (vol.get("configMap") or {}).get("name"))
        add("secrets", (vol.get("secret") or {}).get("secretName"))
        add("persistentvolumeclaims", volume_claim_name(pod, vol))
        for src in (vol.get("projected") or {}).get("sources") or []:
            add("configmaps", (src.get("configMap") or {}).get("name"))
            add("secrets", (src.get("secret") or {}).get("name"))
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or []),
              *(spec.get("ephemeralContainers") or [])]:
        for env in c.get("env") or []:
            vf = env.get("valueFrom") or {}
            add("configmaps", (vf.get("configMapKeyRef") or {}).get("name"))
            add("secrets", (vf.get("secretKeyRef") or {}).get("name"))
        for ef in c.get("envFrom") or []:
            add("configmaps", (ef.get("configMapRef") or {}).get("name"))
            add("secrets", (ef.get("secretRef") or {}).get("name"))
    for ps in spec.get("imagePullSecrets") or []:
        add("secrets", ps.get("name"))
    add("serviceaccounts", spec.get("serviceAccountName") or "default")
    return refs


def bound_volumes(pod: dict, claim: Callable[[str], dict | None]) -> set[str]:
    """Names of the PersistentVolumes bound to the claims `pod` references; `claim(name)`:
    that claim in the pod's namespace, or None."""
    out: set[str] = set()
    for plural, name in pod_references(pod):
        if plural == "persistentvolumeclaims":
            volume = ((claim(name) or {}).get("spec") or {}).get("volumeName")
            if isinstance(volume, str) and volume:
                out.add(volume)
    return out
