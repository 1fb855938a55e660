"""A pod's resolver settings from its dnsPolicy and dnsConfig, as the kubelet writes its
resolv.conf: ClusterFirst (the default; ClusterFirstWithHostNet for hostNetwork pods) uses
the cluster DNS with the search path `<ns>.svc.<domain> svc.<domain> <domain>` and ndots:5;
Default keeps the node's resolvers; None takes only dnsConfig. dnsConfig's nameservers,
searches and options are added (options by name, the pod's value winning)."""

from __future__ import annotations

__all__ = ["pod_dns_settings"]


def pod_dns_settings(pod: dict, cluster: tuple[str, str] | None
                     ) -> tuple[list[str], list[str], list[str]] | None:
    """(nameservers, searches, options) for the pod, or None to keep the runtime's default
    (the node's resolv.conf)."""
    spec = pod.get("spec") or {}
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    cfg = spec.get("dnsConfig") or {}
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"  # upstream: hostNetwork pods need ClusterFirstWithHostNet
    servers: list[str] = []
    searches: list[str] = []
    options: dict[str, str | None] = {}
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        if cluster is None:
            policy = "Default"  # no cluster DNS on this node (yet): the node's resolvers
        else:
            ip, domain = cluster
            servers = [ip]
            searches = [f"{ns}.svc.{domain}", f"svc.{domain}", domain]
            options["ndots"] = "5"
    if policy == "Default" and not cfg:
        return None
    servers += [s for s in cfg.get("nameservers") or [] if isinstance(s, str)]
    searches += [s for s in cfg.get("searches") or [] if isinstance(s, str)]
    for opt in cfg.get("options") or []:
        if isinstance(opt, dict) and opt.get("name"):
            options[str(opt["name"])] = None if opt.get("value") is None else str(opt["value"])
    opts = [k if v is None else f"{k}:{v}" for k, v in options.items()]
    return servers[:3], list(dict.fromkeys(searches))[:32], opts
