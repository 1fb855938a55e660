"""The cluster's DNS records, as CoreDNS's kubernetes plugin serves them, from the Services and
EndpointSlices the node holds (kept in metamanager, so they answer offline too).

In the cluster zone (`--cluster-domain`, default cluster.local):
- `svc.ns.svc.zone`: A/AAAA of the ClusterIPs; a headless Service: the ready endpoints'
  addresses; an ExternalName Service: a CNAME to its external name.
- `host.svc.ns.svc.zone`: a headless Service's endpoint by its hostname (or its address with
  dashes), A/AAAA.
- `_port._proto.svc.ns.svc.zone`: SRV of each named port, to the Service name (ClusterIP) or
  to each endpoint's name (headless).
- `a-b-c-d.ns.pod.zone`: A of that address (CoreDNS's `pods insecure`, K3s's default).
- PTR of ClusterIPs and headless endpoint addresses in in-addr.arpa / ip6.arpa.
A name in the zone that matches nothing is NXDOMAIN; a name that exists with no record of the
asked type (AAAA of an IPv4 Service, or `ns.svc.zone` itself) is NOERROR with no answer
(NODATA), both with the zone's SOA, as CoreDNS answers.

`ClusterRecords.answer(qname, qtype)` returns what to put in a response; dns.py serves it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

__all__ = ["ClusterRecords", "Answer", "TTL", "is_ip", "ready_endpoints"]

TTL = 5  # CoreDNS kubernetes plugin's default
_A, _AAAA, _CNAME, _SRV, _PTR, _SOA, _ANY = (dns.rdatatype.A, dns.rdatatype.AAAA,
                                             dns.rdatatype.CNAME, dns.rdatatype.SRV,
                                             dns.rdatatype.PTR, dns.rdatatype.SOA,
                                             dns.rdatatype.ANY)
_IN = dns.rdataclass.IN
_REVERSE = (dns.name.from_text("in-addr.arpa."), dns.name.from_text("ip6.arpa."))


@dataclass
class Answer:
    """`authoritative`: the name is ours (else: forward it). `exists`: NOERROR rather than
    NXDOMAIN. `answer`: the records (empty with `exists`: NODATA, the SOA goes in authority)."""
    authoritative: bool
    exists: bool = False
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    soa: dns.rrset.RRset | None = None


@dataclass
class _Endpoint:
    addresses: list[str]
    hostname: str


def _dashed(ip: str) -> str:
    return ip.replace(".", "-").replace(":", "-")


def _family_type(ip: str) -> int:
    return _A if ipaddress.ip_address(ip).version == 4 else _AAAA


class ClusterRecords:
    def __init__(self, domain: str = "cluster.local") -> None:
        self.zone = dns.name.from_text(domain.strip(".") + ".")
        self._svc_zone = dns.name.from_text("svc", self.zone)
        self._pod_zone = dns.name.from_text("pod", self.zone)
        self._services: dict[tuple[str, str], dict] = {}
        # (namespace, service name) -> slice name -> ready endpoints
        self._slices: dict[tuple[str, str], dict[str, list[_Endpoint]]] = {}
        self._slice_owner: dict[tuple[str, str], str] = {}  # (ns, slice) -> service name
        self._namespaces: dict[str, int] = {}  # namespace -> Services in it
        self.soa = dns.rrset.from_text(
            self.zone, TTL, _IN, _SOA,
            f"ns.dns.{self.zone} hostmaster.{self.zone} 1 7200 1800 86400 {TTL}")

    # ---------------------------------------------------------------- keeping the index

    def set_service(self, svc: dict) -> None:
        md = svc.get("metadata") or {}
        key = (md.get("namespace") or "default", md.get("name") or "")
        if key not in self._services:
            self._namespaces[key[0]] = self._namespaces.get(key[0], 0) + 1
        self._services[key] = svc

    def delete_service(self, namespace: str, name: str) -> None:
        if self._services.pop((namespace, name), None) is not None:
            left = self._namespaces.get(namespace, 1) - 1
            if left:
                self._namespaces[namespace] = left
            else:
                self._namespaces.pop(namespace, None)

    def set_endpointslice(self, es: dict) -> None:
        md = es.get("metadata") or {}
        ns, name = md.get("namespace") or "default", md.get("name") or ""
        owner = (md.get("labels") or {}).get("kubernetes.io/service-name") or ""
        self.delete_endpointslice(ns, name)
        if not owner:
            return
        ready = [_Endpoint(addrs, ep.get("hostname") or "")
                 for ep, addrs in ready_endpoints(es) if addrs]
        self._slices.setdefault((ns, owner), {})[name] = ready
        self._slice_owner[(ns, name)] = owner

    def delete_endpointslice(self, namespace: str, name: str) -> None:
        owner = self._slice_owner.pop((namespace, name), None)
        if owner is not None:
            slices = self._slices.get((namespace, owner), {})
            slices.pop(name, None)
            if not slices:
                self._slices.pop((namespace, owner), None)

    def endpoints(self, namespace: str, service: str) -> list[_Endpoint]:
        out: list[_Endpoint] = []
        for eps in self._slices.get((namespace, service), {}).values():
            out.extend(eps)
        return out

    # ---------------------------------------------------------------- answering

    def answer(self, qname: dns.name.Name, qtype: int) -> Answer:
        if qname.is_subdomain(self.zone):
            return self._in_zone(qname, qtype)
        if qtype in (_PTR, _ANY) and any(qname.is_subdomain(r) for r in _REVERSE):
            target = self._reverse(qname)
            if target is not None:
                return Answer(True, True, [dns.rrset.from_text(qname, TTL, _IN, _PTR,
                                                               target.to_text())])
        return Answer(False)

    def _in_zone(self, qname: dns.name.Name, qtype: int) -> Answer:
        labels = [lb.decode().lower() for lb in qname.relativize(self.zone).labels]
        found = self._lookup(labels, qname, qtype)
        if found is None:
            return Answer(True, False, soa=self.soa)
        if qtype == _SOA and not labels:
            found = [self.soa]
        return Answer(True, True, found, None if found else self.soa)

    def _lookup(self, labels: list[str], qname: dns.name.Name,
                qtype: int) -> list[dns.rrset.RRset] | None:
        """None: no such name; [] the name exists (NODATA for this type)."""
        if not labels or labels == ["svc"] or labels == ["pod"]:
            return []
        if labels[-1] == "pod" and len(labels) == 3:
            return self._pod(labels[0], qname, qtype)
        if labels[-1] != "svc":
            return None
        rest = labels[:-1]  # relative to svc.zone, most specific first
        if len(rest) == 1:
            return [] if rest[0] in self._namespaces else None
        if len(rest) == 2:
            return self._service(rest[1], rest[0], qname, qtype)
        if len(rest) == 3:
            return self._endpoint(rest[2], rest[1], rest[0], qname, qtype)
        if len(rest) == 4 and rest[0].startswith("_") and rest[1].startswith("_"):
            return self._srv(rest[3], rest[2], rest[0][1:], rest[1][1:], qname, qtype)
        return None

    def _pod(self, dashed: str, qname: dns.name.Name, qtype: int) -> list | None:
        ip = dashed.replace("-", ".")
        if not is_ip(ip) or ipaddress.ip_address(ip).version != 4:
            ip = dashed.replace("-", ":")
            if not is_ip(ip):
                return None
        return self._addresses(qname, [ip], qtype)

    def _service(self, ns: str, name: str, qname: dns.name.Name, qtype: int) -> list | None:
        svc = self._services.get((ns, name))
        if svc is None:
            return None
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            target = str(spec.get("externalName") or "").strip(".")
            if not target or qtype not in (_CNAME, _A, _AAAA, _ANY):
                return []
            return [dns.rrset.from_text(qname, TTL, _IN, _CNAME, target + ".")]
        ips = _cluster_ips(spec)
        if ips is None:  # headless
            ips = [a for ep in self.endpoints(ns, name) for a in ep.addresses]
        return self._addresses(qname, ips, qtype)

    def _endpoint(self, ns: str, svc_name: str, host: str, qname: dns.name.Name,
                  qtype: int) -> list | None:
        if (ns, svc_name) not in self._services:
            return None
        ips = [a for ep in self.endpoints(ns, svc_name) for a in ep.addresses
               if _endpoint_label(ep, a) == host]
        return self._addresses(qname, ips, qtype) if ips else None

    def _srv(self, ns: str, svc_name: str, port: str, proto: str, qname: dns.name.Name,
             qtype: int) -> list | None:
        svc = self._services.get((ns, svc_name))
        if svc is None:
            return None
        spec = svc.get("spec") or {}
        ports = [p for p in spec.get("ports") or []
                 if str(p.get("name") or "").lower() == port
                 and str(p.get("protocol") or "TCP").lower() == proto]
        if not ports:
            return None
        if qtype not in (_SRV, _ANY):
            return []
        base = dns.name.from_text(f"{svc_name}.{ns}", self._svc_zone)
        if _cluster_ips(spec) is None:
            eps = self.endpoints(ns, svc_name)
            targets = sorted({dns.name.from_text(_endpoint_label(ep, a), base).to_text()
                              for ep in eps for a in ep.addresses})
        else:
            targets = [base.to_text()]
        if not targets:
            return []
        weight = max(1, 100 // len(targets))
        rdatas = [f"0 {weight} {p.get('port')} {t}" for p in ports for t in targets]
        return [dns.rrset.from_text_list(qname, TTL, _IN, _SRV, rdatas)]

    @staticmethod
    def _addresses(qname: dns.name.Name, ips: list[str], qtype: int) -> list:
        out = []
        for rtype in (_A, _AAAA):
            if qtype not in (rtype, _ANY):
                continue
            mine = sorted({ip for ip in ips if _family_type(ip) == rtype})
            if mine:
                out.append(dns.rrset.from_text_list(qname, TTL, _IN, rtype, mine))
        return out

    def _reverse(self, qname: dns.name.Name) -> dns.name.Name | None:
        try:
            ip = dns.reversename.to_address(qname)
        except (dns.exception.SyntaxError, ValueError):
            return None
        for (ns, name), svc in self._services.items():
            spec = svc.get("spec") or {}
            ips = _cluster_ips(spec)
            base = dns.name.from_text(f"{name}.{ns}", self._svc_zone)
            if ips is not None and ip in ips:
                return base
            if ips is None:
                for ep in self.endpoints(ns, name):
                    if ip in ep.addresses:
                        return dns.name.from_text(_endpoint_label(ep, ip), base)
        return None


def _cluster_ips(spec: dict) -> list[str] | None:
    """The Service's ClusterIPs; None when it is headless."""
    ips = [ip for ip in spec.get("clusterIPs") or [spec.get("clusterIP")] if ip]
    if not ips or ips == ["None"]:
        return None
    return [ip for ip in ips if is_ip(ip)]


def _endpoint_label(ep: _Endpoint, ip: str) -> str:
    return ep.hostname.lower() if ep.hostname else _dashed(ip)


def ready_endpoints(es: dict) -> list[tuple[dict, list[str]]]:
    """(endpoint, its addresses that are IPs) for each endpoint of an EndpointSlice not
    marked unready: what DNS, the service rules and the ingress route to."""
    return [(ep, [a for a in ep.get("addresses") or [] if is_ip(a)])
            for ep in es.get("endpoints") or []
            if (ep.get("conditions") or {}).get("ready") is not False]


def is_ip(value: object) -> bool:
    try:
        ipaddress.ip_address(str(value))
        return True
    except ValueError:
        return False
