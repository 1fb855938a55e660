"""Pod Security Admission, as upstream's built-in plug-in: the Pod Security Standards
(privileged, baseline, restricted; "latest") chosen per namespace by the labels
`pod-security.kubernetes.io/enforce`, `.../warn` and `.../audit`.

- enforce: a pod that violates the level is refused on create, 403 with upstream's message
  (`violates PodSecurity "restricted:latest": ...`);
- warn: the request succeeds with a Warning header per violation; also for the pod template
  of Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs and CronJobs (enforce does not
  apply to templates, as upstream);
- audit: recorded as an annotation on the audit Event upstream; here a log line.
On create, and on update when it matters as upstream: a pod whose containers or images
changed (enforce, warn, audit), a workload whose pod template changed (warn, audit).
A namespace update that makes its enforce level stricter warns, as upstream, with the existing
pods that would violate it (grouped by violation, at most _MAX_PODS_CHECKED pods checked).
A namespace without a label gets the cluster-wide default for that mode
(`--pod-security-admission-config-file`: upstream's AdmissionConfiguration with a
PodSecurityConfiguration, defaults and exemptions of namespaces, usernames, runtime classes);
without the file it is privileged (no checks), as on K3s, and kube-system is exempt."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from k3py.api import errors
from k3py.api.resources import Resource
from k3py.server.apiserver.auth import REQUEST_USER
from k3py.server.configfile import ConfigError, read_yaml
from k3py.server.registry import Registry

__all__ = ["PodSecurityAdmission", "PodSecurityConfig", "check_pod", "existing_pod_warnings",
           "LEVELS"]

log = logging.getLogger("k3py.podsecurity")

LEVELS = ("privileged", "baseline", "restricted")
_LABEL = "pod-security.kubernetes.io/"
_MODES = ("enforce", "warn", "audit")
_EXEMPT_NAMESPACES = {"kube-system"}
_TEMPLATES = {("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"),
              ("apps", "daemonsets"), ("batch", "jobs"), ("", "replicationcontrollers")}

_BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                  "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
_SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                 "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                 "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                 "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                 "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
_MAX_PODS_CHECKED = 3000  # upstream's namespaceMaxPodsToCheck
_RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                       "persistentVolumeClaim", "projected", "secret"}


def _containers(spec: dict) -> list[dict]:
    return [c for key in ("initContainers", "containers", "ephemeralContainers")
            for c in spec.get(key) or [] if isinstance(c, dict)]


def _names(cs: list[dict]) -> str:
    names = ", ".join(f'"{c.get("name")}"' for c in cs)
    return f'container{"s" if len(cs) > 1 else ""} {names}'


def _baseline(spec: dict) -> list[str]:
    out = []
    cs = _containers(spec)
    sec = spec.get("securityContext") or {}
    host = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    if host:
        out.append(f"host namespaces ({', '.join(host)})")
    priv = [c for c in cs if (c.get("securityContext") or {}).get("privileged")]
    if priv:
        out.append(f"privileged ({_names(priv)} must not set "
                   f"securityContext.privileged=true)")
    adds = {}
    for c in cs:
        extra = [a for a in ((c.get("securityContext") or {}).get("capabilities") or {})
                 .get("add") or [] if a not in _BASELINE_CAPS]
        if extra:
            adds[c.get("name")] = extra
    if adds:
        caps = sorted({a for v in adds.values() for a in v})
        out.append(f'non-default capabilities ({_names([{"name": n} for n in adds])} must not '
                   f'include {", ".join(repr(a).replace(chr(39), chr(34)) for a in caps)} in '
                   f'securityContext.capabilities.add)')
    host_paths = [v.get("name") for v in spec.get("volumes") or [] if v.get("hostPath")]
    if host_paths:
        out.append(f'hostPath volumes (volume{"s" if len(host_paths) > 1 else ""} '
                   f'{", ".join(chr(34) + str(n) + chr(34) for n in host_paths)})')
    ports = [c for c in cs if any(p.get("hostPort") for p in c.get("ports") or [])]
    if ports:
        out.append(f"hostPort ({_names(ports)} uses hostPort)")
    if (sec.get("windowsOptions") or {}).get("hostProcess"):
        out.append("hostProcess (pod must not set securityContext.windowsOptions.hostProcess)")
    unconfined = []
    if (sec.get("seccompProfile") or {}).get("type") == "Unconfined":
        unconfined.append("pod")
    unconfined += [c.get("name") for c in cs if ((c.get("securityContext") or {})
                   .get("seccompProfile") or {}).get("type") == "Unconfined"]
    if unconfined:
        out.append("seccompProfile (must not set securityContext.seccompProfile.type to "
                   "\"Unconfined\")")
    proc = [c for c in cs if (c.get("securityContext") or {}).get("procMount") not in
            (None, "Default")]
    if proc:
        out.append(f"procMount ({_names(proc)} must not set securityContext.procMount)")
    bad_sysctls = [s.get("name") for s in sec.get("sysctls") or []
                   if s.get("name") not in _SAFE_SYSCTLS]
    if bad_sysctls:
        out.append(f"forbidden sysctls ({', '.join(map(str, bad_sysctls))})")
    return out


def _restricted(spec: dict) -> list[str]:
    out = _baseline(spec)
    cs = _containers(spec)
    sec = spec.get("securityContext") or {}
    vols = [v.get("name") for v in spec.get("volumes") or []
            if not any(k in v for k in _RESTRICTED_VOLUMES)]
    if vols:
        out.append(f"restricted volume types (volume"
                   f"{'s' if len(vols) > 1 else ''} {', '.join(chr(34) + str(n) + chr(34) for n in vols)} "
                   f"uses a volume type that is not allowed)")
    esc = [c for c in cs if (c.get("securityContext") or {}).get("allowPrivilegeEscalation")
           is not False]
    if esc:
        out.append(f"allowPrivilegeEscalation != false ({_names(esc)} must set "
                   f"securityContext.allowPrivilegeEscalation=false)")
    caps = [c for c in cs if "ALL" not in (((c.get("securityContext") or {})
                                            .get("capabilities") or {}).get("drop") or [])]
    if caps:
        out.append(f'unrestricted capabilities ({_names(caps)} must set '
                   f'securityContext.capabilities.drop=["ALL"])')
    if not sec.get("runAsNonRoot"):
        root = [c for c in cs if not (c.get("securityContext") or {}).get("runAsNonRoot")]
        if root:
            out.append(f"runAsNonRoot != true (pod or {_names(root)} must set "
                       f"securityContext.runAsNonRoot=true)")
    if sec.get("runAsUser") == 0 or any((c.get("securityContext") or {}).get("runAsUser") == 0
                                        for c in cs):
        out.append("runAsUser=0 (pod and containers must not set runAsUser=0)")
    pod_seccomp = (sec.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in ("RuntimeDefault", "Localhost"):
        missing = [c for c in cs if (((c.get("securityContext") or {}).get("seccompProfile")
                                      or {}).get("type")) not in ("RuntimeDefault", "Localhost")]
        if missing:
            out.append(f'seccompProfile (pod or {_names(missing)} must set '
                       f'securityContext.seccompProfile.type to "RuntimeDefault" or '
                       f'"Localhost")')
    return out


# the reasons in the order of upstream's check IDs (allowPrivilegeEscalation, ...,
# windowsHostProcess), the order its messages list them in
_REASON_ORDER = ("allowPrivilegeEscalation", "non-default capabilities",
                 "unrestricted capabilities", "host namespaces", "hostPath volumes", "hostPort",
                 "privileged", "procMount", "restricted volume types", "runAsNonRoot",
                 "runAsUser", "seccompProfile", "forbidden sysctls", "hostProcess")


def _reason_rank(violation: str) -> int:
    return next((i for i, r in enumerate(_REASON_ORDER) if violation.startswith(r)),
                len(_REASON_ORDER))


def check_pod(level: str, spec: dict) -> list[str]:
    """The violations of `spec` (a PodSpec) against `level`, in upstream's wording and
    order."""
    if level == "baseline":
        return sorted(_baseline(spec), key=_reason_rank)
    if level == "restricted":
        return sorted(_restricted(spec), key=_reason_rank)
    return []


@dataclass(frozen=True)
class PodSecurityConfig:
    """The cluster-wide defaults (mode -> level, for a namespace without that label) and
    exemptions: upstream's PodSecurityConfiguration."""
    defaults: dict[str, str] = field(default_factory=dict)
    exempt_namespaces: frozenset[str] = frozenset(_EXEMPT_NAMESPACES)
    exempt_usernames: frozenset[str] = frozenset()
    exempt_runtime_classes: frozenset[str] = frozenset()

    @classmethod
    def load(cls, path: str) -> PodSecurityConfig:
        """From an AdmissionConfiguration file (`--pod-security-admission-config-file`, as
        K3s and kube-apiserver take it): the PodSecurity plug-in's configuration, inline or
        in the file its `path` names. ConfigError says what is wrong."""
        doc = read_yaml(path, "the admission configuration")
        if not isinstance(doc, dict) or doc.get("kind") != "AdmissionConfiguration":
            raise ConfigError(f"{path}: want kind AdmissionConfiguration "
                              f"(apiserver.config.k8s.io/v1)")
        for plugin in doc.get("plugins") or []:
            if isinstance(plugin, dict) and plugin.get("name") == "PodSecurity":
                conf = plugin.get("configuration")
                if conf is None and plugin.get("path"):
                    where = os.path.join(os.path.dirname(os.path.abspath(path)), plugin["path"])
                    conf = read_yaml(where, "the PodSecurity configuration")
                if not isinstance(conf, dict):
                    raise ConfigError(f"{path}: the PodSecurity plug-in has no configuration")
                return cls.from_configuration(conf, path)
        raise ConfigError(f"{path}: no plug-in named PodSecurity")

    @classmethod
    def from_configuration(cls, conf: dict, where: str) -> PodSecurityConfig:
        if conf.get("kind") != "PodSecurityConfiguration":
            raise ConfigError(f"{where}: the PodSecurity plug-in's configuration must be of "
                              f"kind PodSecurityConfiguration")
        defaults = {}
        for key, value in (conf.get("defaults") or {}).items():
            mode, _, version = str(key).partition("-")
            if mode not in _MODES or version not in ("", "version"):
                raise ConfigError(f"{where}: unknown defaults key {key!r}")
            if version:
                continue  # one version of the standards here: latest
            if value not in LEVELS:
                raise ConfigError(f"{where}: defaults.{key} must be one of "
                                  f"{', '.join(LEVELS)}, not {value!r}")
            defaults[mode] = value
        ex = conf.get("exemptions") or {}
        return cls(defaults=defaults,
                   exempt_namespaces=frozenset(ex.get("namespaces") or ()),
                   exempt_usernames=frozenset(ex.get("usernames") or ()),
                   exempt_runtime_classes=frozenset(ex.get("runtimeClasses") or ()))


def _levels(ns: dict | None, defaults: dict[str, str]) -> dict[str, str]:
    """mode -> level for the namespace: its label, else the cluster default; privileged
    (no checks) left out."""
    labels = ((ns or {}).get("metadata") or {}).get("labels") or {}
    out = {}
    for mode in _MODES:
        level = labels.get(_LABEL + mode)
        if level not in LEVELS:
            level = defaults.get(mode, "privileged")
        if level != "privileged":
            out[mode] = level
    return out


def _significant_pod_update(new: dict, old: dict) -> bool:
    """Upstream's rule: a pod update is judged again only when a container was added or
    removed or changed its image (the rest of a pod's spec cannot change or does not matter
    to the standards)."""
    def images(pod: dict) -> list:
        spec = pod.get("spec") or {}
        return [[c.get("image") for c in spec.get(k) or [] if isinstance(c, dict)]
                for k in ("initContainers", "containers", "ephemeralContainers")]
    return images(new) != images(old)


class PodSecurityAdmission:
    """On create (a mutator: it reads the namespace) and on update (an update check) of pods
    and workloads: refuses pods (enforce) or warns and logs (warn, audit; also for templates).
    A pod update is judged again only when it is significant (_significant_pod_update), a
    workload's only when its pod template changed, as upstream."""

    def __init__(self, registry: Registry, warn, config: PodSecurityConfig | None = None) -> None:
        self.registry = registry
        self.warn = warn  # appends a Warning to the current request's response
        self.config = config or PodSecurityConfig()

    async def __call__(self, res: Resource, obj: dict) -> None:
        await self._evaluate(res, obj)

    async def on_update(self, res: Resource, obj: dict, old: dict) -> None:
        key = (res.group, res.plural)
        if key == ("", "namespaces"):
            await self._new_enforce_level(obj, old)
            return
        if not _judged(key):
            return
        if key == ("", "pods"):
            if not _significant_pod_update(obj, old):
                return
        elif _pod_template(key, obj) == _pod_template(key, old):
            return
        await self._evaluate(res, obj)

    async def _evaluate(self, res: Resource, obj: dict) -> None:
        key = (res.group, res.plural)
        if not _judged(key):
            return
        ns = (obj.get("metadata") or {}).get("namespace") or ""
        if not ns or ns in self.config.exempt_namespaces:
            return
        user = REQUEST_USER.get()
        if user is not None and user.name in self.config.exempt_usernames:
            return
        ns_res = self.registry.served("", "namespaces")
        levels = _levels(await self.registry.read_through(ns_res, None, ns),
                         self.config.defaults)
        if not levels:
            return
        spec = _pod_spec(key, obj)
        if spec is None or spec.get("runtimeClassName") in self.config.exempt_runtime_classes:
            return
        name = (obj.get("metadata") or {}).get("name") or \
            (obj.get("metadata") or {}).get("generateName") or ""
        if key == ("", "pods") and "enforce" in levels:
            bad = check_pod(levels["enforce"], spec)
            if bad:
                raise errors.forbidden(
                    f'pods "{name}" is forbidden: violates PodSecurity '
                    f'"{levels["enforce"]}:latest": {", ".join(bad)}', "", "pods", name)
        if "warn" in levels:
            bad = check_pod(levels["warn"], spec)
            if bad:
                self.warn(f'would violate PodSecurity "{levels["warn"]}:latest": '
                          f'{", ".join(bad)}')
        if "audit" in levels:
            bad = check_pod(levels["audit"], spec)
            if bad:
                log.info("PodSecurity audit: %s %s/%s violates %s:latest: %s", res.kind, ns,
                         name, levels["audit"], "; ".join(bad))


    async def _new_enforce_level(self, ns: dict, old: dict) -> None:
        """Upstream's check of a namespace update: when its enforce level changes to one that
        is not privileged, a Warning for the existing pods that violate the new level."""
        level = _levels(ns, self.config.defaults).get("enforce")
        name = (ns.get("metadata") or {}).get("name") or ""
        if level is None or level == _levels(old, self.config.defaults).get("enforce") or \
                name in self.config.exempt_namespaces:
            return
        pods = (await self.registry.list(self.registry.served("", "pods"), name))["items"]
        for warning in existing_pod_warnings(name, level, pods,
                                             self.config.exempt_runtime_classes):
            self.warn(warning)


def existing_pod_warnings(namespace: str, level: str, pods: list[dict],
                          exempt_runtime_classes: frozenset[str] = frozenset()) -> list[str]:
    """Upstream's warnings for the existing `pods` of `namespace` under the new enforce
    `level`: a heading, then per distinct violation "<first pod by name> (and N other pods):
    <violations>", sorted."""
    checked = pods[:_MAX_PODS_CHECKED]
    by_reason: dict[str, list[str]] = {}
    for pod in checked:
        spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
        if spec.get("runtimeClassName") in exempt_runtime_classes:
            continue
        bad = check_pod(level, spec)
        if bad:
            reason = ", ".join(b.partition(" (")[0] for b in bad)
            by_reason.setdefault(reason, []).append(pod["metadata"]["name"])
    out = []
    if len(checked) < len(pods):
        out.append(f"new PodSecurity enforce level only checked against the first "
                   f"{len(checked)} of {len(pods)} existing pods")
    if by_reason:
        out.append(f'existing pods in namespace "{namespace}" violate the new PodSecurity '
                   f'enforce level "{level}:latest"')
    out += sorted(f"{_counted(names)}: {reason}" for reason, names in by_reason.items())
    return out


def _counted(names: list[str]) -> str:
    first, others = min(names), len(names) - 1
    if others == 0:
        return first
    return f"{first} (and {others} other pod{'s' if others > 1 else ''})"


def _judged(key: tuple[str, str]) -> bool:
    return key == ("", "pods") or key in _TEMPLATES or key == ("batch", "cronjobs")


def _pod_template(key: tuple[str, str], obj: dict) -> dict | None:
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    if key == ("batch", "cronjobs"):
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return spec.get("template")


def _pod_spec(key: tuple[str, str], obj: dict) -> dict | None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return None
    if key == ("", "pods"):
        return spec
    if key == ("batch", "cronjobs"):
        spec = ((spec.get("jobTemplate") or {}).get("spec") or {})
    tmpl = (spec.get("template") or {}).get("spec")
    return tmpl if isinstance(tmpl, dict) else None
