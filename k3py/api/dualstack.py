"""IPv4/IPv6 dual-stack rules shared by the server's flags, allocators and validation: CIDR
lists of one network per family, and a Service's ipFamilies/ipFamilyPolicy/clusterIPs.

`init_ip_families` is upstream's service REST initIPFamilyFields (defaults that depend on the
cluster's families, checked before allocation); `validate_cluster_ips` and
`validate_family_update` are upstream's ValidateServiceClusterIPsRelatedFields and the
upgrade/downgrade checks of ValidateServiceUpdate. No I/O: the server's ServiceAllocator and
the Service kind's validation call them."""

from __future__ import annotations

import ipaddress

from k3py.api import validation as v
from k3py.api.errors import Cause

__all__ = ["Network", "parse_cidrs", "family_of", "FAMILIES", "POLICIES",
           "normalize_cluster_ips", "init_ip_families", "validate_cluster_ips",
           "validate_family_update", "validate_external_name_families"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

IPV4, IPV6 = "IPv4", "IPv6"
FAMILIES = [IPV4, IPV6]
SINGLE, PREFER, REQUIRE = "SingleStack", "PreferDualStack", "RequireDualStack"
POLICIES = [PREFER, REQUIRE, SINGLE]


def parse_cidrs(value: str) -> list[Network]:
    """"10.42.0.0/16" or "10.42.0.0/16,2001:cafe:42::/56" (either order; the first is the
    primary family); ValueError with a one-line message otherwise."""
    parts = [p.strip() for p in value.split(",")]
    if not value.strip() or any(not p for p in parts):
        raise ValueError("want one CIDR, or an IPv4 and an IPv6 CIDR separated by a comma")
    nets: list[Network] = []
    for part in parts:
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not a CIDR such as 10.42.0.0/16 or "
                             f"2001:cafe:42::/56") from None
    if len(nets) > 2 or len({n.version for n in nets}) != len(nets):
        raise ValueError("want one CIDR, or an IPv4 and an IPv6 CIDR separated by a comma "
                         "(not two of one family)")
    return nets


def family_of(ip: str) -> str:
    return IPV6 if ":" in ip else IPV4


def _headless(spec: dict) -> bool:
    return (spec.get("clusterIPs") or []) == ["None"]


def _other(family: str) -> str:
    return IPV6 if family == IPV4 else IPV4


def normalize_cluster_ips(spec: dict, old_spec: dict | None) -> None:
    """Keep clusterIP and clusterIPs in step for clients that set only one (upstream's
    NormalizeClusterIPs): old clients know only the singular field."""
    ip, ips = spec.get("clusterIP") or "", spec.get("clusterIPs") or []
    if old_spec is None:
        if ip and not ips:
            spec["clusterIPs"] = [ip]
        return
    old_ip, old_ips = old_spec.get("clusterIP") or "", old_spec.get("clusterIPs") or []
    if old_ips and not ips and old_ip == ip:
        spec["clusterIPs"] = ips = list(old_ips)
    if old_ip != ip:
        if old_ip and not ip and ips == old_ips:
            spec.pop("clusterIPs", None)
        elif ips == old_ips:
            spec["clusterIPs"] = [ip]


def init_ip_families(spec: dict, old_spec: dict | None, families: list[str]) -> list[Cause]:
    """Default ipFamilyPolicy and ipFamilies of a Service that gets cluster IPs, for a cluster
    whose service CIDRs are of `families` (the primary first); the causes of a 422 if the
    request cannot be met. Only for types other than ExternalName."""
    old = old_spec
    if _matching_prefer_dual_stack(spec, old):
        return []
    if spec.get("ipFamilyPolicy") is None:
        if old is not None and old.get("ipFamilyPolicy"):
            spec["ipFamilyPolicy"] = old["ipFamilyPolicy"]
        elif spec.get("clusterIP") == "None" and not spec.get("selector"):
            spec["ipFamilyPolicy"] = REQUIRE
        else:
            spec["ipFamilyPolicy"] = SINGLE
    causes = validate_cluster_ips(spec)
    if causes:
        return causes
    policy = spec["ipFamilyPolicy"]
    ips: list[str] = list(spec.get("clusterIPs") or [])
    fams: list[str] = list(spec.get("ipFamilies") or [])
    if old is not None:
        old_ips, old_fams = old.get("clusterIPs") or [], old.get("ipFamilies") or []
        if policy == SINGLE:
            # the policy says what to release; clusterIPs[0] is immutable, so keep it
            if ips == old_ips and len(ips) > 1:
                spec["clusterIPs"] = ips = ips[:1]
            if fams == old_fams and len(fams) > 1:
                spec["ipFamilies"] = fams = fams[:1]
        else:
            if ips and len(ips) < len(old_ips):
                causes.append(v.invalid_value("spec.ipFamilyPolicy", policy, "must be "
                              "'SingleStack' to release the secondary cluster IP"))
            if fams and len(fams) < len(old_fams):
                causes.append(v.invalid_value("spec.ipFamilyPolicy", policy, "must be "
                              "'SingleStack' to release the secondary IP family"))
    if policy == SINGLE:
        if len(ips) == 2:
            causes.append(v.invalid_value("spec.ipFamilyPolicy", policy, "must be "
                          "'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs "
                          "are specified"))
        if len(fams) == 2:
            causes.append(v.invalid_value("spec.ipFamilyPolicy", policy, "must be "
                          "'RequireDualStack' or 'PreferDualStack' when multiple IP families "
                          "are specified"))
    for i, ip in enumerate(ips):
        if ip == "None":
            break
        if i >= len(fams):
            fam = family_of(ip)
            if fam in families:
                fams.append(fam)
            else:
                causes.append(v.invalid_value(f"spec.clusterIPs[{i}]", ips,
                                              f"{fam} is not configured on this cluster"))
    if causes:
        return causes
    if spec.get("clusterIP") == "None" and not spec.get("selector"):
        fams = fams or [families[0]]
        if len(fams) < 2 and policy != SINGLE:
            fams.append(_other(fams[0]))
        spec["ipFamilies"] = fams
        return []
    if policy == REQUIRE and len(families) < 2:
        causes.append(v.invalid_value("spec.ipFamilyPolicy", policy,
                                      "this cluster is not configured for dual-stack services"))
    causes += [v.invalid_value(f"spec.ipFamilies[{i}]", fam, "not configured on this cluster")
               for i, fam in enumerate(fams) if fam not in families]
    if causes:
        return causes
    fams = fams or [families[0]]
    if policy != SINGLE and len(fams) == 1 and len(families) == 2:
        fams.append(_other(fams[0]))
    spec["ipFamilies"] = fams
    return []


def _matching_prefer_dual_stack(spec: dict, old: dict | None) -> bool:
    """An update of a PreferDualStack Service that keeps its IPs and families: left as it is,
    so a cluster turned dual-stack (or back) does not add or drop a family by itself."""
    if old is None or spec.get("ipFamilyPolicy") is None:
        return False
    if (spec.get("type") or "ClusterIP") != (old.get("type") or "ClusterIP"):
        return False
    return spec.get("ipFamilyPolicy") == PREFER and \
        old.get("ipFamilyPolicy") in (None, PREFER) and \
        (spec.get("clusterIPs") or []) == (old.get("clusterIPs") or []) and \
        (spec.get("ipFamilies") or []) == (old.get("ipFamilies") or [])


def validate_cluster_ips(spec: dict) -> list[Cause]:
    """clusterIP/clusterIPs/ipFamilies/ipFamilyPolicy of a Service other than ExternalName,
    each on its own and against each other."""
    causes: list[Cause] = []
    ip, ips = spec.get("clusterIP") or "", spec.get("clusterIPs") or []
    if ip:
        if not ips:
            causes.append(v.required("spec.clusterIPs"))
        elif ips[0] != ip:
            causes.append(v.invalid_value("spec.clusterIPs", ips,
                                          "first value must match `clusterIP`"))
    elif ips:
        causes.append(v.invalid_value("spec.clusterIPs", ips,
                                      "must be empty when `clusterIP` is not specified"))
    seen: set[str] = set()
    for i, fam in enumerate(spec.get("ipFamilies") or []):
        if fam not in FAMILIES:
            causes.append(v.not_supported(f"spec.ipFamilies[{i}]", fam, FAMILIES))
        if fam in seen:
            causes.append(v.duplicate(f"spec.ipFamilies[{i}]", fam))
        seen.add(fam)
    policy = spec.get("ipFamilyPolicy")
    if policy is not None and policy not in POLICIES:
        causes.append(v.not_supported("spec.ipFamilyPolicy", policy, POLICIES))
    bad = False
    for i, one in enumerate(ips):
        if i == 0 and one == "None":
            if len(ips) > 1:
                bad = True
                causes.append(v.invalid_value("spec.clusterIPs", ips,
                                              "'None' must be the first and only value"))
            continue
        if not _is_ip(one):
            bad = True
            causes.append(v.invalid_value(f"spec.clusterIPs[{i}]", one,
                                          "must be a valid IP address, (e.g. 10.9.8.7 or "
                                          "2001:db8::ffff)"))
    if len(ips) > 2:
        causes.append(v.invalid_value("spec.clusterIPs", ips, "may only hold up to 2 values"))
    if bad:
        return causes
    if len(ips) > 1 and len({family_of(x) for x in ips}) != len(ips):
        causes.append(v.invalid_value("spec.clusterIPs", ips,
                                      "may specify no more than one IP for each IP family"))
    fams = spec.get("ipFamilies") or []
    if not _headless(spec):
        for i, one in enumerate(ips[:len(fams)]):
            if fams[i] in FAMILIES and family_of(one) != fams[i]:
                causes.append(v.invalid_value(
                    f"spec.clusterIPs[{i}]", one,
                    f"expected an {fams[i]} value as indicated by `ipFamilies[{i}]`"))
    return causes


def _is_ip(s: object) -> bool:
    try:
        ipaddress.ip_address(s)  # type: ignore[arg-type]
    except ValueError:
        return False
    return True


def validate_external_name_families(spec: dict) -> list[Cause]:
    """An ExternalName Service has no cluster IPs and so no families or policy."""
    return [v.forbidden(f"spec.{f}", "may not be set for ExternalName services")
            for f in ("clusterIPs", "ipFamilies", "ipFamilyPolicy")
            if spec.get(f) not in (None, [])]


def validate_family_update(spec: dict, old: dict) -> list[Cause]:
    """clusterIPs and ipFamilies of an update: a secondary may be added, or released with
    SingleStack; the primary never changes (except to or from ExternalName or headless)."""
    st, old_st = spec.get("type") or "ClusterIP", old.get("type") or "ClusterIP"
    if "ExternalName" in (st, old_st):
        return []
    causes = _changed("clusterIPs", spec, old, "clusterIP",
                      skip=_headless(spec) and _headless(old))
    if _headless(spec) == _headless(old) and not _headless(spec):
        causes += _changed("ipFamilies", spec, old, "ipFamily", skip=False)
    return causes


def _changed(field: str, spec: dict, old: dict, one: str, *, skip: bool) -> list[Cause]:
    if skip:
        return []
    new_v, old_v = spec.get(field) or [], old.get(field) or []
    # upstream quotes clusterIPs in the ipFamilies messages too
    shown = spec.get("clusterIPs") or [] if field == "ipFamilies" else new_v
    causes: list[Cause] = []
    if len(new_v) == len(old_v):
        for i, was in enumerate(old_v):
            if was != new_v[i]:
                at = i if field == "clusterIPs" else 0
                causes.append(v.invalid_value(f"spec.{field}[{at}]", new_v,
                                              "may not change once set"))
        return causes
    if len(new_v) < len(old_v):
        if field == "clusterIPs" and not new_v or field == "ipFamilies" and \
                not spec.get("clusterIPs"):
            causes.append(v.invalid_value(f"spec.{field}[0]", new_v,
                                          f"primary {one} can not be unset"))
        if new_v and old_v and new_v[0] != old_v[0]:
            causes.append(v.invalid_value(f"spec.{field}[0]", shown, "may not change once set"))
        if len(new_v) == 1 and spec.get("ipFamilyPolicy") != SINGLE:
            causes.append(v.invalid_value("spec.ipFamilyPolicy", spec.get("ipFamilyPolicy"),
                                          f"must be set to 'SingleStack' when releasing the "
                                          f"secondary {one}"))
        return causes
    if old_v and new_v[0] != old_v[0]:
        causes.append(v.invalid_value(f"spec.{field}[0]", shown, "may not change once set"))
    return causes
