"""Claims and volumes as upstream's PV binder sees them: the binding annotations, a claim's class
and request, whether a PersistentVolume satisfies a claim and on which nodes it can be used.

Pure; shared by the PersistentVolume controller, the local-path provisioner and the
scheduler's volume binding."""

from __future__ import annotations

from k3py.api.nodeselector import node_selector_term_matches
from k3py.api.podrefs import volume_claim_name
from k3py.api.quantity import QuantityError, int_value
from k3py.api.selectors import SelectorError, label_selector_from_struct

__all__ = ["ANN_BIND_COMPLETED", "ANN_BOUND_BY_CONTROLLER", "ANN_SELECTED_NODE",
           "ANN_STORAGE_PROVISIONER", "ANN_BETA_STORAGE_PROVISIONER", "ANN_PROVISIONED_BY",
           "ANN_BETA_CLASS", "ANN_DEFAULT_CLASS", "ANN_BETA_DEFAULT_CLASS", "WAIT_FOR_CONSUMER",
           "claim_class", "volume_class", "claim_request", "volume_capacity", "claim_ref",
           "bound_to_claim", "volume_fits_claim", "mismatch", "volume_node_matches",
           "find_matching_volume", "annotations", "is_default_class", "delays_binding",
           "claim_names", "pod_claims"]

ANN_BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
ANN_BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
ANN_SELECTED_NODE = "volume.kubernetes.io/selected-node"
ANN_STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
ANN_BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
ANN_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
ANN_BETA_CLASS = "volume.beta.kubernetes.io/storage-class"
ANN_DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
ANN_BETA_DEFAULT_CLASS = "storageclass.beta.kubernetes.io/is-default-class"
WAIT_FOR_CONSUMER = "WaitForFirstConsumer"


def annotations(obj: dict) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def claim_class(claim: dict) -> str:
    """The claim's StorageClass name: the beta annotation wins, as upstream; "" = none."""
    ann = annotations(claim)
    if ANN_BETA_CLASS in ann:
        return ann[ANN_BETA_CLASS]
    return (claim.get("spec") or {}).get("storageClassName") or ""


def volume_class(volume: dict) -> str:
    ann = annotations(volume)
    if ANN_BETA_CLASS in ann:
        return ann[ANN_BETA_CLASS]
    return (volume.get("spec") or {}).get("storageClassName") or ""


def is_default_class(sc: dict) -> bool:
    ann = annotations(sc)
    return "true" in (ann.get(ANN_DEFAULT_CLASS), ann.get(ANN_BETA_DEFAULT_CLASS))


def _bytes(value) -> int:
    try:
        return int_value(value) if value is not None else 0
    except QuantityError:
        return 0


def claim_request(claim: dict) -> int:
    spec = claim.get("spec") or {}
    return _bytes(((spec.get("resources") or {}).get("requests") or {}).get("storage"))


def volume_capacity(volume: dict) -> int:
    return _bytes(((volume.get("spec") or {}).get("capacity") or {}).get("storage"))


def claim_ref(claim: dict) -> dict:
    md = claim.get("metadata") or {}
    return {"kind": "PersistentVolumeClaim", "namespace": md.get("namespace"),
            "name": md.get("name"), "uid": md.get("uid"), "apiVersion": "v1",
            "resourceVersion": md.get("resourceVersion")}


def bound_to_claim(volume: dict, claim: dict) -> bool:
    """The volume's claimRef names this claim (a ref without uid is a user's pre-binding)."""
    ref = (volume.get("spec") or {}).get("claimRef")
    if not isinstance(ref, dict):
        return False
    md = claim.get("metadata") or {}
    if ref.get("name") != md.get("name") or ref.get("namespace") != md.get("namespace"):
        return False
    return not ref.get("uid") or ref.get("uid") == md.get("uid")


def _mode(obj: dict) -> str:
    return (obj.get("spec") or {}).get("volumeMode") or "Filesystem"


def mismatch(volume: dict, claim: dict) -> str:
    """Why a volume cannot back a claim ("" = it can); upstream checkVolumeSatisfyClaim's
    texts, for a claim that names the volume."""
    if volume_capacity(volume) < claim_request(claim):
        return "requested PV is too small"
    if volume_class(volume) != claim_class(claim):
        return "storageClassName does not match"
    if _mode(volume) != _mode(claim):
        return "incompatible volumeMode"
    if not set((claim.get("spec") or {}).get("accessModes") or []) <= \
            set((volume.get("spec") or {}).get("accessModes") or []):
        return "incompatible accessMode"
    return ""


def _selector_matches(claim: dict, volume: dict) -> bool:
    sel = (claim.get("spec") or {}).get("selector")
    if sel is None:
        return True
    try:
        return label_selector_from_struct(sel).matches(
            (volume.get("metadata") or {}).get("labels") or {})
    except SelectorError:
        return False


def volume_fits_claim(volume: dict, claim: dict) -> bool:
    """Size, class, mode, access modes and the claim's selector (not phase or binding)."""
    return not mismatch(volume, claim) and _selector_matches(claim, volume)


def volume_node_matches(volume: dict, node: dict) -> bool:
    """The volume's required node affinity (terms ORed) admits the node; none = every node."""
    required = (((volume.get("spec") or {}).get("nodeAffinity") or {}).get("required"))
    if not required:
        return True
    return any(node_selector_term_matches(t, node)
               for t in required.get("nodeSelectorTerms") or [])


def find_matching_volume(claim: dict, volumes: list[dict], *, node: dict | None = None,
                         delay_binding: bool = False,
                         excluded: frozenset[str] = frozenset()) -> dict | None:
    """upstream FindMatchingVolume: a volume already bound to the claim, else the smallest
    Available unbound volume that fits it (on `node`, when given). With delayed binding and
    no node only a pre-bound volume is returned: the scheduler picks the others."""
    best: dict | None = None
    request = claim_request(claim)
    for vol in volumes:
        name = (vol.get("metadata") or {}).get("name") or ""
        if name in excluded or (vol.get("metadata") or {}).get("deletionTimestamp"):
            continue
        if _mode(vol) != _mode(claim):
            continue
        if bound_to_claim(vol, claim):
            if node is not None and not volume_node_matches(vol, node):
                return None
            return vol
        if node is None and delay_binding:
            continue
        if (vol.get("status") or {}).get("phase") != "Available":
            continue
        if (vol.get("spec") or {}).get("claimRef"):
            continue
        if node is not None and not volume_node_matches(vol, node):
            continue
        if not volume_fits_claim(vol, claim):
            continue
        if volume_capacity(vol) >= request and \
                (best is None or volume_capacity(vol) < volume_capacity(best)):
            best = vol
    return best


def delays_binding(claim: dict, storage_class: dict | None) -> bool:
    """upstream IsDelayBindingMode less the selected node: the claim waits for its first
    consumer's node unless the scheduler already chose one."""
    if ANN_SELECTED_NODE in annotations(claim) or storage_class is None:
        return False
    return storage_class.get("volumeBindingMode") == WAIT_FOR_CONSUMER


def pod_claims(pod: dict) -> list[tuple[str, bool]]:
    """(claim name, ephemeral) for each claim a pod's volumes use; an ephemeral volume's
    claim is <pod>-<volume>, made by the ephemeral volume controller."""
    out = []
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = volume_claim_name(pod, vol)
        if name:
            out.append((name, not isinstance(vol.get("persistentVolumeClaim"), dict)))
    return out


def claim_names(pod: dict) -> list[str]:
    return [name for name, _ in pod_claims(pod)]
