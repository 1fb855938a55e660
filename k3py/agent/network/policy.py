"""NetworkPolicy (networking.k8s.io/v1) on the node, as K3s's embedded kube-router policy
controller enforces it: one nftables table (`ip k3py-policy`) built from the policies, the
namespaces' labels and the pods' addresses the server sends every node (the `podpeers` views:
name, labels, IP, node and named ports of each pod, nothing more), loaded by manager.py in the
same `nft -f` transaction as the service rules (proxy.py); should nft refuse it, the service
rules load alone and the previous policy table stays.

Semantics, as upstream:
- A pod selected by a policy with policyType Ingress (Egress) accepts (sends) only what one
  rule of one such policy allows: the policies are a union. A pod no policy selects is open.
- Peers: podSelector (the policy's namespace), namespaceSelector, both (pods of those
  namespaces), ipBlock with except; ports: protocol, number, name (resolved from the
  receiving pod's containerPorts) and endPort ranges. Empty `from`/`to`/`ports`: anything.
- Replies of allowed connections pass (conntrack established/related); hostNetwork pods are
  neither selected nor peers. Dual-stack: the same rules for the pods' IPv6 addresses in an
  `ip6` table of the same name (ipBlocks of each family in their own table), loaded with it.
- Traffic from the node itself (kubelet probes, the node's processes) never passes the
  forward hook, so it is always allowed, as kube-router allows the node; so is a pod's
  traffic to the node itself (the input hook), which keeps the cluster DNS served by the
  agent on the node reachable under a default-deny egress policy.

Where it is checked: in the `forward` hook, after the service DNAT of prerouting, so a
policy sees the real pod IP behind a ClusterIP. A pod's egress is checked on its node and its
ingress on the receiver's node; cross-node traffic is routed and so forwarded. Same-node
pod-to-pod traffic is bridged, which the IP hooks see only through br_netfilter with
`net.bridge.bridge-nf-call-iptables=1`: the agent loads it (`modprobe br_netfilter`) and sets
the sysctl, as K3s does for flannel and kube-router. Chosen over the `bridge` family's own
hooks because conntrack there needs nf_conntrack_bridge, which neither Raspberry Pi OS's
kernel nor many distribution kernels build, while br_netfilter is everywhere that runs
podman's bridge (and already on in most hosts running containers).

A denied packet is rejected (ICMP port unreachable / TCP reset, as kube-router's REJECT), so
a client fails at once rather than waiting for a timeout.

`build_ruleset(...)` is pure (tested by loading it with `nft -c`)."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field

from k3py.api.selectors import LabelSelector, SelectorError, label_selector_from_struct

__all__ = ["TABLE", "PodPeer", "pod_peers", "build_ruleset", "delete_script",
           "ingress_isolated"]

TABLE = "k3py-policy"
_PROTOS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


@dataclass
class PodPeer:
    """What a node knows of a pod for NetworkPolicy: from the server's `podpeers` view."""
    namespace: str
    name: str
    ip: str
    node: str
    labels: dict[str, str]
    ports: dict[tuple[str, str], int] = field(default_factory=dict)  # (name, proto) -> port

    @property
    def id(self) -> str:
        return hashlib.sha256(f"{self.namespace}/{self.name}".encode()).hexdigest()[:12]


def pod_peers(views: list[dict], family: int = 4) -> list[PodPeer]:
    """The pods with an address of `family` (4 or 6) that are not on the host's network and
    not finished, each with that address."""
    out = []
    for view in views:
        md, spec, status = (view.get(k) or {} for k in ("metadata", "spec", "status"))
        ips = [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)] or \
            [status.get("podIP")]
        ip = next((x for x in ips if x and _version(x) == family), "")
        if spec.get("hostNetwork") or status.get("phase") in ("Succeeded", "Failed") or not ip:
            continue
        ports = {}
        for c in spec.get("containers") or []:
            for p in c.get("ports") or []:
                if p.get("name") and isinstance(p.get("containerPort"), int):
                    proto = _PROTOS.get(str(p.get("protocol") or "TCP"))
                    if proto:
                        ports.setdefault((p["name"], proto), p["containerPort"])
        out.append(PodPeer(md.get("namespace") or "default", md.get("name") or "", ip,
                           spec.get("nodeName") or "", dict(md.get("labels") or {}), ports))
    return sorted(out, key=lambda p: (p.namespace, p.name))


class _Cluster:
    """The pods and namespaces' labels the policies' selectors match against."""

    def __init__(self, pods: list[PodPeer], namespaces: list[dict], family: int = 4) -> None:
        self.pods = pods
        self.family = family  # of the pods' addresses and the rules' matches
        self.l3 = "ip" if family == 4 else "ip6"
        self.ns_labels = {(n.get("metadata") or {}).get("name") or "":
                          dict((n.get("metadata") or {}).get("labels") or {})
                          for n in namespaces}
        self._peers: dict[tuple[int, str], list[PodPeer]] = {}

    def select_peer(self, peer: dict, namespace: str) -> list[PodPeer]:
        """The pods a podSelector/namespaceSelector peer of a policy in `namespace` selects
        (the same for every pod the policy selects: computed once per build)."""
        key = (id(peer), namespace)
        if key not in self._peers:
            try:
                pod_sel = label_selector_from_struct(peer.get("podSelector") or {})
                ns_sel = label_selector_from_struct(peer["namespaceSelector"] or {}) \
                    if "namespaceSelector" in peer else None
                self._peers[key] = self.select(namespace, pod_sel, ns_sel)
            except SelectorError:
                self._peers[key] = []
        return self._peers[key]

    def select(self, namespace: str | None, pod_sel: LabelSelector,
               ns_sel: LabelSelector | None) -> list[PodPeer]:
        """Pods matching pod_sel in `namespace`, or (ns_sel given) in the namespaces it
        matches (a namespace's labels include kubernetes.io/metadata.name, as upstream)."""
        out = []
        for pod in self.pods:
            if ns_sel is None:
                if pod.namespace != namespace:
                    continue
            elif not ns_sel.matches({**self.ns_labels.get(pod.namespace, {}),
                                     "kubernetes.io/metadata.name": pod.namespace}):
                continue
            if pod_sel.matches(pod.labels):
                out.append(pod)
        return out


def build_ruleset(policies: list[dict], namespaces: list[dict], pods: list[PodPeer], *,
                  node_name: str, table: str = TABLE, family: int = 4) -> str:
    """The whole table as one nft script that replaces the previous one (declared, deleted,
    written again). Only this node's pods get chains: the others are checked on theirs.
    `family` 6: the `ip6` table, `pods` with their IPv6 addresses (pod_peers(..., 6))."""
    cluster = _Cluster(pods, namespaces, family)
    l3, addr_type = cluster.l3, "ipv4_addr" if family == 4 else "ipv6_addr"
    # one chain per address: a stale view may still hold a gone pod's IP (the first wins)
    local = list({p.ip: p for p in reversed(pods) if p.node == node_name}.values())[::-1]
    chains: list[str] = []
    ingress_map: list[str] = []
    egress_map: list[str] = []
    for pod in local:
        for direction, vmap in (("ingress", ingress_map), ("egress", egress_map)):
            rules = _pod_rules(pod, direction, policies, cluster)
            if rules is None:
                continue  # no policy of this direction selects the pod: open
            chain = f"{direction}-{pod.id}"
            vmap.append(f"{pod.ip} : jump {chain}")
            chains += [f"  chain {chain} {{", f'    comment "{pod.namespace}/{pod.name}"',
                       *(f"    {r} return" for r in rules),
                       "    meta l4proto tcp reject with tcp reset", "    reject", "  }"]
    lines = [f"table {l3} {table} {{}}", f"delete table {l3} {table}", f"table {l3} {table} {{",
             "  map ingress-pods {", f"    type {addr_type} : verdict",
             *_elements(ingress_map), "  }",
             "  map egress-pods {", f"    type {addr_type} : verdict", *_elements(egress_map),
             "  }",
             "  chain forward {", "    type filter hook forward priority filter; policy accept;",
             "    ct state established,related accept",
             f"    {l3} saddr vmap @egress-pods", f"    {l3} daddr vmap @ingress-pods", "  }",
             *chains, "}"]
    return "\n".join(lines) + "\n"


def delete_script(table: str = TABLE, families: tuple[str, ...] = ("ip", "ip6")) -> str:
    """Declare and delete `table` in each of `families` (nothing left, no error if absent)."""
    return "".join(f"table {f} {table} {{}}\ndelete table {f} {table}\n" for f in families)


def _pod_rules(pod: PodPeer, direction: str, policies: list[dict],
               cluster: _Cluster) -> list[str] | None:
    """The nft matches that allow `pod`'s traffic in `direction` (a match returns: allowed),
    or None when no policy of that direction selects the pod."""
    kind = "Ingress" if direction == "ingress" else "Egress"
    selected = False
    rules: list[str] = []
    for pol in policies:
        if not _selects(pol, pod, kind):
            continue
        selected = True
        for rule in (pol.get("spec") or {}).get(direction) or []:
            rules += _rule_matches(rule or {}, direction, pod, pod.namespace, cluster)
    return _unique(rules) if selected else None


def _selects(pol: dict, pod: PodPeer, kind: str) -> bool:
    """Whether policy `pol` selects `pod` for `kind` ("Ingress" or "Egress")."""
    md, spec = pol.get("metadata") or {}, pol.get("spec") or {}
    if (md.get("namespace") or "default") != pod.namespace or \
            kind not in (spec.get("policyTypes") or ["Ingress"]):
        return False
    try:
        return label_selector_from_struct(spec.get("podSelector") or {}).matches(pod.labels)
    except SelectorError:
        return False  # (validation refuses such a policy; one from before is ignored)


def ingress_isolated(policies: list[dict], pods: list[PodPeer]) -> frozenset[str]:
    """The IPs of the pods an Ingress policy selects. A connection relayed through the tunnel
    reaches the pod from its node, not from the pod that opened it, so the pod's rules cannot
    be checked against it: the relay refuses connections to these pods."""
    return frozenset(pod.ip for pod in pods
                     if any(_selects(pol, pod, "Ingress") for pol in policies))


def _rule_matches(rule: dict, direction: str, pod: PodPeer, namespace: str,
                  cluster: _Cluster) -> list[str]:
    """The matches of one rule. A named port is the receiving pod's: this pod's for ingress,
    each peer pod's for egress (an ipBlock peer has none to name)."""
    ports = [p for p in rule.get("ports") or [] if isinstance(p, dict)]
    named = any(isinstance(q.get("port"), str) and not q["port"].isdigit() for q in ports)
    if direction == "ingress":
        peers = [m for peer in rule.get("from") or []
                 for m in _peer_matches(peer or {}, "saddr", namespace, cluster)[0]] \
            if rule.get("from") else [""]
        return [f"{m} {p}".strip() for m in peers for p in _port_matches(ports, pod)]
    if rule.get("to"):
        matches, targets = [], []
        for peer in rule["to"]:
            m, t = _peer_matches(peer or {}, "daddr", namespace, cluster)
            matches += m
            targets += t
    else:  # any destination
        matches, targets = [""], cluster.pods
    out = [f"{m} {p}".strip() for m in matches for p in _port_matches(ports, None)]
    if named:  # each destination pod's own number for the name
        out += [f"{cluster.l3} daddr {t.ip} {p}" for t in targets
                for p in _port_matches(ports, t, named_only=True)]
    return out


def _peer_matches(peer: dict, addr: str, namespace: str,
                  cluster: _Cluster) -> tuple[list[str], list[PodPeer]]:
    """The nft matches of one peer's addresses, and the pods it selects (for named ports)."""
    if "ipBlock" in peer:
        block = peer.get("ipBlock") or {}
        cidr = block.get("cidr") or ""
        l3 = cluster.l3
        if _net_version(cidr) != cluster.family:
            return [], []
        excepts = _unique([_net(c) for c in block.get("except") or []
                           if _net_version(c) == cluster.family])
        match = f"{l3} {addr} {_net(cidr)}"
        if excepts:
            match += f" {l3} {addr} != {{ {', '.join(excepts)} }}"
        return [match], []
    pods = cluster.select_peer(peer, namespace)
    ips = sorted({p.ip for p in pods}, key=ipaddress.ip_address)
    if not ips:
        return [], []
    return [f"{cluster.l3} {addr} {ips[0]}" if len(ips) == 1 else
            f"{cluster.l3} {addr} {{ {', '.join(ips)} }}"], pods


def _port_matches(ports: list[dict], receiver: PodPeer | None,
                  named_only: bool = False) -> list[str]:
    """nft port matches for a rule's ports ([""]: any port); a named port resolves only
    from the receiving pod (None: not at all), and one it does not declare matches nothing,
    as upstream. `named_only`: only the named ports."""
    if not ports:
        return [""]
    out = []
    for p in ports:
        proto = _PROTOS.get(str(p.get("protocol") or "TCP"))
        port, end = p.get("port"), p.get("endPort")
        named = isinstance(port, str) and not port.isdigit()
        if proto is None or (named_only and not named):
            continue
        if port is None:
            out.append(f"meta l4proto {proto}")
        elif named:
            number = receiver.ports.get((port, proto)) if receiver is not None else None
            if number is not None:
                out.append(f"meta l4proto {proto} th dport {number}")
        elif str(port).isdigit() and 0 < int(port) <= 65535:
            port = int(port)
            rng = f"{port}-{end}" if isinstance(end, int) and port < end <= 65535 else str(port)
            out.append(f"meta l4proto {proto} th dport {rng}")
    return out


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _elements(items: list[str]) -> list[str]:
    return [f"    elements = {{ {', '.join(items)} }}"] if items else []


def _net(cidr: str) -> str:
    return str(ipaddress.ip_network(cidr, strict=False))


def _version(ip: object) -> int:
    try:
        return ipaddress.ip_address(str(ip)).version
    except ValueError:
        return 0


def _net_version(cidr: object) -> int:
    try:
        return ipaddress.ip_network(str(cidr), strict=False).version
    except ValueError:
        return 0
