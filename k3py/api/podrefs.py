"""What a pod references by name in its own namespace: the ConfigMaps, Secrets,
PersistentVolumeClaims and ServiceAccount its kubelet needs to run it (upstream's node graph
edges: volumes, projected sources, env and envFrom, imagePullSecrets, ephemeral volumes'
claims named <pod>-<volume>, the pod's service account)."""

from __future__ import annotations

__all__ = ["pod_references"]


def pod_references(pod: dict) -> set[tuple[str, str]]:
    """(plural, name) of each object `pod` references, in the pod's namespace."""
    spec = pod.get("spec") or {}
    refs: set[tuple[str, str]] = set()

    def add(plural: str, name: object) -> None:
        if isinstance(name, str) and name:
            refs.add((plural, name))
    pod_name = (pod.get("metadata") or {}).get("name") or ""
    for vol in spec.get("volumes") or []:
        add("configmaps", (vol.get("configMap") or {}).get("name"))
        add("secrets", (vol.get("secret") or {}).get("secretName"))
        add("persistentvolumeclaims", (vol.get("persistentVolumeClaim") or {}).get("claimName"))
        if isinstance(vol.get("ephemeral"), dict) and pod_name and vol.get("name"):
            add("persistentvolumeclaims", f"{pod_name}-{vol['name']}")
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
