"""What a Kubernetes pod spec becomes on this node: the runtime's container specs (env from
values, configmaps, secrets, fields, resources; the KUBERNETES_SERVICE_* variables) and the
host directories behind the pod's volumes (emptyDir, hostPath, configMap, secret, downwardAPI,
projected with serviceAccountToken sources, persistentVolumeClaim and ephemeral through their
bound volume: agent/storage/claims.py).

The API address given to pods: there is no kube-proxy, so the `kubernetes` Service's cluster
IP leads nowhere. Pods get the address this agent joined the server with (PodSpecs), which is
in the server's serving certificate (the address a node reaches it by); when that is a
loopback address (the embedded agent joins over 127.0.0.1) a pod on its own network would
reach itself, so it gets the node IP instead, which the server's certificate lists as its
advertise address. hostNetwork pods share the host's loopback and keep the joined address.
The variable names are upstream's for the `kubernetes` Service (KUBERNETES_PORT_443_TCP*)
while the values carry the server's real port.

Service-account tokens arrive as `podtokens` objects (k3py/server/edge/podtokens.py); each token is
written to <volume dir>/<path> by write-then-rename, so a running pod that mounts the whole
volume directory sees a fresh token as soon as the server sends one."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import math
import os
import tempfile
from urllib.parse import urlsplit

from k3py.agent.metamanager import MetaManager
from k3py.agent.storage.claims import claim_directory, make_sub_paths
from k3py.api.quantity import QuantityError, parse_quantity
from k3py.tunnel.protocol import POD_TOKENS_KIND

__all__ = ["PodSpecs", "container_specs", "prepare_volumes", "api_endpoint", "resource_value",
           "refresh_tokens"]

class PodSpecs:
    """The pod translation of one agent: the server it joined and its node IP (the API
    address pods get), its meta cache; rewrites service-account token files whenever fresh
    tokens arrive in the cache, from `watch_tokens()` until `unwatch_tokens()`."""

    def __init__(self, meta: MetaManager, *, server_url: str = "", host_ip: str = "") -> None:
        self.meta = meta
        self.server_url = server_url
        self.host_ip = host_ip

    def container_specs(self, pod: dict, volume_dirs: dict[str, str],
                        key: str = "containers") -> list[dict]:
        return container_specs(pod, self.meta, volume_dirs, self.host_ip, key,
                               server_url=self.server_url)

    def prepare_volumes(self, pod: dict, root: str) -> dict[str, str]:
        return prepare_volumes(pod, self.meta, root, self.host_ip)

    def watch_tokens(self) -> None:
        if self._on_change not in self.meta.listeners:
            self.meta.listeners.append(self._on_change)

    def unwatch_tokens(self) -> None:
        if self._on_change in self.meta.listeners:
            self.meta.listeners.remove(self._on_change)

    def _on_change(self, what: str) -> None:
        if what in (POD_TOKENS_KIND, "sync"):
            refresh_tokens(self.meta)


def api_endpoint(server_url: str, host_ip: str, host_network: bool) -> tuple[str, int]:
    """(host, port) of the API server as a pod can reach it (see the module docstring)."""
    parts = urlsplit(server_url or "https://127.0.0.1:6443")
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    if not host_network:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if loopback and host_ip:
            host = host_ip
    return host, port


def _service_env(host: str, port: int) -> list[tuple[str, str]]:
    addr = f"[{host}]" if ":" in host else host
    url = f"tcp://{addr}:{port}"
    return [("KUBERNETES_SERVICE_HOST", host), ("KUBERNETES_SERVICE_PORT", str(port)),
            ("KUBERNETES_SERVICE_PORT_HTTPS", str(port)), ("KUBERNETES_PORT", url),
            ("KUBERNETES_PORT_443_TCP", url), ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
            ("KUBERNETES_PORT_443_TCP_PORT", str(port)), ("KUBERNETES_PORT_443_TCP_ADDR", host)]


def _field_ref(pod: dict, path: str, host_ip: str) -> str:
    md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    simple = {"metadata.name": md.get("name"), "metadata.namespace": md.get("namespace"),
              "metadata.uid": md.get("uid"), "spec.nodeName": spec.get("nodeName"),
              "spec.serviceAccountName": spec.get("serviceAccountName"),
              "status.hostIP": host_ip, "status.podIP": (pod.get("status") or {}).get("podIP")}
    if path in simple:
        return simple[path] or ""
    for prefix, source in (("metadata.labels['", md.get("labels")),
                           ("metadata.annotations['", md.get("annotations"))):
        if path.startswith(prefix) and path.endswith("']"):
            return (source or {}).get(path[len(prefix):-2], "")
    if path in ("metadata.labels", "metadata.annotations"):  # volumes only: key="value" lines
        source = md.get(path.split(".")[1]) or {}
        return "".join(f'{k}="{_quote(v)}"\n' for k, v in sorted(source.items())).rstrip("\n")
    return ""


def _quote(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _node_capacity() -> dict[str, int]:
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        memory = 0
    return {"cpu": os.cpu_count() or 1, "memory": memory}


def resource_value(container: dict | None, resource: str, divisor: object = None) -> str:
    """resourceFieldRef as upstream's kubelet: limits.* fall back to the node's capacity when
    unset, requests.* to 0; the value divided by `divisor` rounded up."""
    res = (container or {}).get("resources") or {}
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not name:
        raise ValueError(f"unsupported resource: {resource}")
    value = (res.get(kind) or {}).get(name)
    try:
        amount = parse_quantity(value) if value is not None else None
        div = parse_quantity(divisor) if divisor not in (None, "", 0) else None
    except QuantityError:
        raise ValueError(f"bad quantity in resourceFieldRef {resource}") from None
    if amount is None:
        amount = parse_quantity(_node_capacity().get(name, 0)) if kind == "limits" else 0
    if not div:
        div = parse_quantity(1)
    if name == "cpu":  # upstream divides millicores by millicores
        return str(math.ceil(math.ceil(amount * 1000) / math.ceil(div * 1000)))
    return str(math.ceil(math.ceil(amount) / math.ceil(div)))


def _container_named(pod: dict, name: str | None, default: dict | None) -> dict | None:
    if not name:
        return default
    spec = pod.get("spec") or {}
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        if c.get("name") == name:
            return c
    return None


def _data_of(obj: dict | None, secret: bool) -> dict[str, str]:
    if obj is None:
        return {}
    if secret:
        out = {k: base64.b64decode(v).decode(errors="replace")
               for k, v in (obj.get("data") or {}).items()}
        out.update(obj.get("stringData") or {})
        return out
    return dict(obj.get("data") or {})


def _limits(c: dict) -> dict:
    """{"cpus": float | None, "memory": int | None} from resources.limits (podman flags)."""
    limits = (c.get("resources") or {}).get("limits") or {}
    out: dict = {"cpus": None, "memory": None}
    try:
        if limits.get("cpu") is not None:
            out["cpus"] = math.ceil(parse_quantity(limits["cpu"]) * 1000) / 1000
        if limits.get("memory") is not None:
            out["memory"] = math.ceil(parse_quantity(limits["memory"]))
    except QuantityError:
        pass  # validation rejects these; nothing to apply
    return out


def _env_of(pod: dict, c: dict, meta: MetaManager, host_ip: str, ns: str, server_url: str
            ) -> list[tuple[str, str]]:
    spec = pod.get("spec") or {}
    host, port = api_endpoint(server_url, host_ip, bool(spec.get("hostNetwork")))
    env: dict[str, str] = dict(_service_env(host, port))
    for ef in c.get("envFrom") or []:
        prefix = ef.get("prefix") or ""
        if ef.get("configMapRef"):
            data = _data_of(meta.get("configmaps", ns, ef["configMapRef"]["name"]), False)
        elif ef.get("secretRef"):
            data = _data_of(meta.get("secrets", ns, ef["secretRef"]["name"]), True)
        else:
            data = {}
        env.update((prefix + k, v) for k, v in data.items())
    for e in c.get("env") or []:
        vf = e.get("valueFrom")
        if not vf:
            env[e["name"]] = e.get("value") or ""
        elif vf.get("configMapKeyRef"):
            ref = vf["configMapKeyRef"]
            env[e["name"]] = _data_of(meta.get("configmaps", ns, ref["name"]),
                                      False).get(ref.get("key"), "")
        elif vf.get("secretKeyRef"):
            ref = vf["secretKeyRef"]
            env[e["name"]] = _data_of(meta.get("secrets", ns, ref["name"]),
                                      True).get(ref.get("key"), "")
        elif vf.get("fieldRef"):
            env[e["name"]] = _field_ref(pod, vf["fieldRef"].get("fieldPath", ""), host_ip)
        elif vf.get("resourceFieldRef"):
            ref = vf["resourceFieldRef"]
            try:
                env[e["name"]] = resource_value(
                    _container_named(pod, ref.get("containerName"), c),
                    ref.get("resource") or "", ref.get("divisor"))
            except ValueError:
                env[e["name"]] = ""
    return list(env.items())


def container_specs(pod: dict, meta: MetaManager, volume_dirs: dict[str, str],
                    host_ip: str, key: str = "containers", *, server_url: str = "") -> list[dict]:
    """The runtime's view of each container of `spec[key]` (containers or initContainers);
    `server_url`: the server this agent joined (see the module docstring)."""
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    spec = pod.get("spec") or {}
    read_only = {v.get("name") for v in spec.get("volumes") or []
                 if (v.get("persistentVolumeClaim") or {}).get("readOnly")}
    out = []
    for c in spec.get(key) or []:
        mounts = [(volume_dirs[m["name"]] + ("/" + m["subPath"] if m.get("subPath") else ""),
                   m["mountPath"], bool(m.get("readOnly")) or m["name"] in read_only)
                  for m in c.get("volumeMounts") or [] if m.get("name") in volume_dirs]
        sc = c.get("securityContext") or {}
        user = ""
        if sc.get("runAsUser") is not None:
            user = str(sc["runAsUser"]) + (f":{sc['runAsGroup']}"
                                           if sc.get("runAsGroup") is not None else "")
        out.append({"name": c["name"], "image": c.get("image") or "",
                    "pullPolicy": c.get("imagePullPolicy") or (
                        "Always" if (c.get("image") or "").endswith(":latest") else
                        "IfNotPresent"),
                    "entrypoint": c.get("command"), "args": c.get("args"),
                    "env": _env_of(pod, c, meta, host_ip, ns, server_url),
                    "workdir": c.get("workingDir"), "mounts": mounts,
                    "privileged": bool(sc.get("privileged")), "user": user,
                    "tty": bool(c.get("tty")), "stdin": bool(c.get("stdin")),
                    "resources": _limits(c)})
    return out


# ---------------------------------------------------------------- volume files


def _write_file(directory: str, rel: str, data: str | bytes, mode: int) -> None:
    """Write-then-rename, so readers never see a half-written file."""
    rel = os.path.normpath(rel)
    if rel.startswith("..") or os.path.isabs(rel):
        return  # validation forbids these; never write outside the volume
    path = os.path.join(directory, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_files(directory: str, files: dict[str, tuple[str | bytes, int]]) -> None:
    os.makedirs(directory, exist_ok=True)
    for rel, (data, mode) in files.items():
        _write_file(directory, rel, data, mode)


def _mode(value: object, default: int) -> int:
    return int(value) & 0o777 if isinstance(value, int) and not isinstance(value, bool) \
        else default


def _keyed_files(data: dict[str, str | bytes], items: list | None, mode: int
                 ) -> dict[str, tuple[str | bytes, int]]:
    """A configMap/secret's keys as files: all keys, or only `items` (key -> path, mode)."""
    if not items:
        return {k: (v, mode) for k, v in data.items()}
    return {it["path"]: (data[it["key"]], _mode(it.get("mode"), mode))
            for it in items if isinstance(it, dict) and it.get("key") in data and it.get("path")}


def _configmap_data(obj: dict | None) -> dict[str, str | bytes]:
    obj = obj or {}
    data: dict[str, str | bytes] = dict(obj.get("data") or {})
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data


def _secret_data(obj: dict | None) -> dict[str, str | bytes]:
    obj = obj or {}
    data: dict[str, str | bytes] = {k: base64.b64decode(v)
                                    for k, v in (obj.get("data") or {}).items()}
    data.update(obj.get("stringData") or {})
    return data


def _downward_files(pod: dict, items: list | None, mode: int, host_ip: str
                    ) -> dict[str, tuple[str | bytes, int]]:
    files: dict[str, tuple[str | bytes, int]] = {}
    for it in items or []:
        if not isinstance(it, dict) or not it.get("path"):
            continue
        if it.get("fieldRef"):
            value = _field_ref(pod, it["fieldRef"].get("fieldPath", ""), host_ip)
        elif it.get("resourceFieldRef"):
            ref = it["resourceFieldRef"]
            try:
                value = resource_value(_container_named(pod, ref.get("containerName"), None),
                                       ref.get("resource") or "", ref.get("divisor"))
            except ValueError:
                continue
        else:
            continue
        files[it["path"]] = (value, _mode(it.get("mode"), mode))
    return files


def _pod_tokens(pod: dict, meta: MetaManager) -> dict:
    md = pod.get("metadata") or {}
    obj = meta.get(POD_TOKENS_KIND, md.get("namespace") or "", md.get("name") or "") or {}
    if (obj.get("metadata") or {}).get("uid") != md.get("uid"):
        return {}  # tokens of an older pod with this name
    return obj.get("tokens") or {}


def _projected_files(pod: dict, vol: dict, meta: MetaManager, ns: str, host_ip: str
                     ) -> dict[str, tuple[str | bytes, int]]:
    proj = vol.get("projected") or {}
    mode = _mode(proj.get("defaultMode"), 0o644)
    tokens = _pod_tokens(pod, meta)
    files: dict[str, tuple[str | bytes, int]] = {}
    for src in proj.get("sources") or []:
        if src.get("configMap"):
            ref = src["configMap"]
            data = _configmap_data(meta.get("configmaps", ns, ref.get("name") or ""))
            files.update(_keyed_files(data, ref.get("items"), mode))
        elif src.get("secret"):
            ref = src["secret"]
            data = _secret_data(meta.get("secrets", ns, ref.get("name") or ""))
            files.update(_keyed_files(data, ref.get("items"), mode))
        elif src.get("downwardAPI"):
            files.update(_downward_files(pod, src["downwardAPI"].get("items"), mode, host_ip))
        elif src.get("serviceAccountToken"):
            path = src["serviceAccountToken"].get("path") or ""
            token = tokens.get(f"{vol.get('name')}/{path}")
            if path and token:
                files[path] = (token["token"], mode)
    return files


def prepare_volumes(pod: dict, meta: MetaManager, root: str, host_ip: str = ""
                    ) -> dict[str, str]:
    """Host directories for the pod's volumes (emptyDir, hostPath, configMap, secret,
    downwardAPI, projected, claims); `host_ip`: the node IP (status.hostIP in downward files).
    VolumeNotReady (agent/storage/claims.py) while a claim's volume cannot be mounted."""
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    dirs: dict[str, str] = {}
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = vol.get("name") or ""
        path = os.path.join(root, name)
        if "hostPath" in vol:
            dirs[name] = vol["hostPath"].get("path") or "/"
            if (vol["hostPath"].get("type") or "") == "DirectoryOrCreate":
                os.makedirs(dirs[name], exist_ok=True)
            continue
        claimed = claim_directory(pod, vol, meta)
        if claimed is not None:
            make_sub_paths(pod, name, claimed)
            dirs[name] = claimed
            continue
        if "emptyDir" in vol:
            os.makedirs(path, exist_ok=True)
        elif "configMap" in vol:
            ref = vol["configMap"]
            data = _configmap_data(meta.get("configmaps", ns, ref.get("name") or ""))
            _write_files(path, _keyed_files(data, ref.get("items"),
                                            _mode(ref.get("defaultMode"), 0o644)))
        elif "secret" in vol:
            ref = vol["secret"]
            data = _secret_data(meta.get("secrets", ns, ref.get("secretName") or ""))
            _write_files(path, _keyed_files(data, ref.get("items"),
                                            _mode(ref.get("defaultMode"), 0o644)))
        elif "downwardAPI" in vol:
            ref = vol["downwardAPI"]
            _write_files(path, _downward_files(pod, ref.get("items"),
                                               _mode(ref.get("defaultMode"), 0o644), host_ip))
        elif "projected" in vol:
            _write_files(path, _projected_files(pod, vol, meta, ns, host_ip))
        else:
            continue
        dirs[name] = path
    return dirs


def refresh_tokens(meta: MetaManager) -> int:
    """Rewrite the token files of pods whose volumes exist on this node from the cached
    `podtokens` objects; returns how many files changed. The pods' volume directories are
    <agent dir>/pods/<uid>/volumes/<volume> (agent dir: where meta.db lives)."""
    pods_dir = os.path.join(os.path.dirname(meta.path), "pods")
    changed = 0
    for pod in meta.pods():
        md = pod.get("metadata") or {}
        tokens = _pod_tokens(pod, meta)
        for vol in (pod.get("spec") or {}).get("volumes") or []:
            for src in (vol.get("projected") or {}).get("sources") or []:
                path = (src.get("serviceAccountToken") or {}).get("path")
                token = tokens.get(f"{vol.get('name')}/{path}") if path else None
                vdir = os.path.join(pods_dir, md.get("uid") or "", "volumes", vol.get("name"))
                if not token or not os.path.isdir(vdir):
                    continue
                target = os.path.join(vdir, path)
                try:
                    with open(target) as f:
                        if f.read() == token["token"]:
                            continue
                except OSError:
                    pass
                mode = _mode((vol.get("projected") or {}).get("defaultMode"), 0o644)
                try:
                    _write_file(vdir, path, token["token"], mode)
                    changed += 1
                except OSError:
                    continue
    return changed
