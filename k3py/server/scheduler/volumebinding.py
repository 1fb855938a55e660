"""The scheduler's VolumeBinding plugin as upstream's: the pod's claims are checked before any
node (missing, being deleted, unbound with Immediate binding), each node is filtered on the
node affinity of bound volumes and on whether its unbound WaitForFirstConsumer claims can get a
volume there, and before the pod is bound the chosen volumes are bound (static PVs) or the
claims annotated with the selected node for their provisioner, then awaited until Bound.

Used by scheduler.py; reads the server's shared informers of claims, volumes and classes."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from k3py.api import errors
from k3py.server.controllers.base import ControllerContext
from k3py.server.controllers.volumematch import (
    ANN_BOUND_BY_CONTROLLER,
    ANN_SELECTED_NODE,
    annotations,
    bound_to_claim,
    claim_class,
    claim_ref,
    delays_binding,
    find_matching_volume,
    pod_claims,
    volume_node_matches,
)

__all__ = ["VolumeBinder", "PodVolumes", "REASON_BIND_CONFLICT", "REASON_NODE_CONFLICT",
           "REASON_PV_NOT_EXIST", "UNBOUND_IMMEDIATE", "BIND_TIMEOUT"]

REASON_BIND_CONFLICT = "node(s) didn't find available persistent volumes to bind"
REASON_NODE_CONFLICT = "node(s) had volume node affinity conflict"
REASON_PV_NOT_EXIST = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
NO_PROVISIONER = "kubernetes.io/no-provisioner"
BIND_TIMEOUT = 600.0  # upstream's bindTimeoutSeconds


@dataclass
class PodVolumes:
    """The pod's claims sorted as PreFilter finds them."""
    bound: list[dict] = field(default_factory=list)  # claims with a volume
    delayed: list[dict] = field(default_factory=list)  # unbound WaitForFirstConsumer claims

    @property
    def empty(self) -> bool:
        return not self.bound and not self.delayed


@dataclass
class Decision:
    """What binding the pod on a node takes: static volumes to bind (volume name -> claim)
    and claims to provision there."""
    node: str
    static: dict[str, dict] = field(default_factory=dict)
    provision: list[dict] = field(default_factory=list)


class VolumeBinder:
    def __init__(self, ctx: ControllerContext) -> None:
        self.ctx = ctx
        self.registry = ctx.registry
        self.pvc_res = ctx.resource("", "persistentvolumeclaims")
        self.pv_res = ctx.resource("", "persistentvolumes")
        self.claims = ctx.informers.informer("", "persistentvolumeclaims")
        self.volumes = ctx.informers.informer("", "persistentvolumes")
        self.classes = ctx.informers.informer("storage.k8s.io", "storageclasses")
        self._assumed: dict[str, str] = {}  # volume name -> claim key, until bound
        self._waiters: set[asyncio.Future] = set()  # PreBinds waiting for a claim or PV change
        self.claims.add_handler(self._wake)
        self.volumes.add_handler(self._wake)

    def _wake(self, etype: str, old: dict | None, new: dict | None) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(None)
        self._waiters.clear()

    async def synced(self) -> None:
        for inf in (self.claims, self.volumes, self.classes):
            await inf.synced.wait()

    # ------------------------------------------------------------ PreFilter

    def pre_filter(self, pod: dict) -> PodVolumes | str:
        """The pod's claims, or why no node can take the pod now."""
        md = pod.get("metadata") or {}
        ns = md.get("namespace")
        out = PodVolumes()
        immediate = False
        for name, ephemeral in pod_claims(pod):
            claim = self.claims.get(ns, name)
            if claim is None:
                return f'waiting for ephemeral volume controller to create the ' \
                    f'persistentvolumeclaim "{name}"' if ephemeral else \
                    f'persistentvolumeclaim "{name}" not found'
            if ephemeral and not any(o.get("uid") == md.get("uid") for o in
                                     claim["metadata"].get("ownerReferences") or []):
                return f"PVC {ns}/{name} was not created for pod {ns}/{md.get('name')} " \
                    "(pod is not owner)"
            if claim["metadata"].get("deletionTimestamp"):
                return f'persistentvolumeclaim "{name}" is being deleted'
            if (claim.get("spec") or {}).get("volumeName"):
                out.bound.append(claim)
                continue
            cls = claim_class(claim)
            if delays_binding(claim, self.classes.get(None, cls) if cls else None):
                out.delayed.append(claim)
            elif ANN_SELECTED_NODE in annotations(claim):
                out.delayed.append(claim)  # being provisioned for an earlier decision
            else:
                immediate = True
        return UNBOUND_IMMEDIATE if immediate else out

    # ------------------------------------------------------------ Filter

    def filter(self, volumes: PodVolumes, node: dict) -> list[str]:
        """Upstream's VolumeBinding reasons for one node (empty = fits)."""
        decision = self.find(volumes, node)
        return decision if isinstance(decision, list) else []

    def find(self, volumes: PodVolumes, node: dict) -> Decision | list[str]:
        node_name = (node.get("metadata") or {}).get("name") or ""
        for claim in volumes.bound:
            pv = self.volumes.get(None, claim["spec"]["volumeName"])
            if pv is None:
                return [REASON_PV_NOT_EXIST]
            if not volume_node_matches(pv, node):
                return [REASON_NODE_CONFLICT]
        decision = Decision(node=node_name)
        taken = frozenset(self._assumed)
        for claim in volumes.delayed:
            selected = annotations(claim).get(ANN_SELECTED_NODE)
            if selected:
                if selected != node_name:
                    return [REASON_NODE_CONFLICT]
                decision.provision.append(claim)
                continue
            pv = find_matching_volume(claim, self.volumes.list(), node=node,
                                      excluded=taken | frozenset(decision.static))
            if pv is not None:
                decision.static[pv["metadata"]["name"]] = claim
                continue
            sc = self.classes.get(None, claim_class(claim))
            if sc is None or (sc.get("provisioner") or NO_PROVISIONER) == NO_PROVISIONER or \
                    not _topology_allows(sc, node):
                return [REASON_BIND_CONFLICT]
            decision.provision.append(claim)
        return decision

    # ------------------------------------------------------------ Reserve + PreBind

    def assume(self, volumes: PodVolumes, node: dict) -> Decision:
        decision = self.find(volumes, node)
        if isinstance(decision, list):
            raise errors.conflict("", "persistentvolumes", "",
                                  "volumes changed while scheduling: " + decision[0])
        for name, claim in decision.static.items():
            md = claim["metadata"]
            self._assumed[name] = f"{md['namespace']}/{md['name']}"
        return decision

    def forget(self, decision: Decision) -> None:
        for name in decision.static:
            self._assumed.pop(name, None)

    async def bind(self, decision: Decision, timeout: float = BIND_TIMEOUT) -> None:
        """Write the decision, then wait until every claim involved is Bound (upstream's
        PreBind); raises TimeoutError past `timeout`."""
        try:
            for name, claim in decision.static.items():
                await self._bind_static(name, claim)
            for claim in decision.provision:
                await self._select_node(claim, decision.node)
            await self._wait_bound(decision, timeout)
        finally:
            self.forget(decision)

    async def _bind_static(self, name: str, claim: dict) -> None:
        def mutate(cur: dict) -> dict | None:
            spec = cur.setdefault("spec", {})
            if spec.get("claimRef"):
                if bound_to_claim(cur, claim):
                    return None
                raise errors.conflict("", "persistentvolumes", name,
                                      "the volume was bound to another claim meanwhile")
            spec["claimRef"] = claim_ref(claim)
            md = cur.setdefault("metadata", {})
            md.setdefault("annotations", {})[ANN_BOUND_BY_CONTROLLER] = "yes"
            return cur
        await self.registry.update_with(self.pv_res, None, name, mutate)

    async def _select_node(self, claim: dict, node: str) -> None:
        def mutate(cur: dict) -> dict | None:
            md = cur.setdefault("metadata", {})
            ann = md.get("annotations") or {}
            if ann.get(ANN_SELECTED_NODE) == node or (cur.get("spec") or {}).get("volumeName"):
                return None
            md["annotations"] = {**ann, ANN_SELECTED_NODE: node}
            return cur
        md = claim["metadata"]
        await self.registry.update_with(self.pvc_res, md["namespace"], md["name"], mutate)

    def _all_bound(self, decision: Decision) -> bool:
        claims = [*decision.static.values(), *decision.provision]
        for claim in claims:
            md = claim["metadata"]
            cur = self.claims.get(md["namespace"], md["name"])
            if cur is None or cur["metadata"].get("uid") != md.get("uid"):
                raise errors.conflict("", "persistentvolumeclaims", md["name"],
                                      f'persistentvolumeclaim "{md["name"]}" was deleted')
            if (cur.get("status") or {}).get("phase") != "Bound":
                return False
        return True

    async def _wait_bound(self, decision: Decision, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._all_bound(decision):
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("binding volumes: timed out waiting for the condition")
            changed = loop.create_future()
            self._waiters.add(changed)
            try:
                with contextlib.suppress(asyncio.TimeoutError):
                    async with asyncio.timeout(left):
                        await changed
            finally:
                self._waiters.discard(changed)


def _topology_allows(sc: dict, node: dict) -> bool:
    """The class's allowedTopologies (terms ORed, values per key ORed) admit the node."""
    terms = sc.get("allowedTopologies") or []
    if not terms:
        return True
    labels = (node.get("metadata") or {}).get("labels") or {}
    return any(all(labels.get(e.get("key")) in (e.get("values") or [])
                   for e in t.get("matchLabelExpressions") or []) for t in terms)
