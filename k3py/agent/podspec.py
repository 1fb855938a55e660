"""What a Kubernetes pod spec becomes on this node: the runtime's container specs (env from
values, configmaps, secrets, fields) and the host directories behind the pod's volumes."""

from __future__ import annotations

import base64
import os

from k3py.agent.metamanager import MetaManager

__all__ = ["container_specs", "prepare_volumes"]


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
    return ""


def _data_of(obj: dict | None, secret: bool) -> dict[str, str]:
    if obj is None:
        return {}
    if secret:
        out = {k: base64.b64decode(v).decode(errors="replace")
               for k, v in (obj.get("data") or {}).items()}
        out.update(obj.get("stringData") or {})
        return out
    return dict(obj.get("data") or {})


def container_specs(pod: dict, meta: MetaManager, volume_dirs: dict[str, str],
                    host_ip: str, key: str = "containers") -> list[dict]:
    """The runtime's view of each container of `spec[key]` (containers or initContainers)."""
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    spec = pod.get("spec") or {}
    out = []
    for c in spec.get(key) or []:
        env: list[tuple[str, str]] = []
        for ef in c.get("envFrom") or []:
            prefix = ef.get("prefix") or ""
            if ef.get("configMapRef"):
                data = _data_of(meta.get("configmaps", ns, ef["configMapRef"]["name"]), False)
            elif ef.get("secretRef"):
                data = _data_of(meta.get("secrets", ns, ef["secretRef"]["name"]), True)
            else:
                data = {}
            env += [(prefix + k, v) for k, v in data.items()]
        for e in c.get("env") or []:
            vf = e.get("valueFrom")
            if not vf:
                env.append((e["name"], e.get("value") or ""))
            elif vf.get("configMapKeyRef"):
                ref = vf["configMapKeyRef"]
                env.append((e["name"], _data_of(meta.get("configmaps", ns, ref["name"]),
                                                False).get(ref.get("key"), "")))
            elif vf.get("secretKeyRef"):
                ref = vf["secretKeyRef"]
                env.append((e["name"], _data_of(meta.get("secrets", ns, ref["name"]),
                                                True).get(ref.get("key"), "")))
            elif vf.get("fieldRef"):
                env.append((e["name"], _field_ref(pod, vf["fieldRef"].get("fieldPath", ""),
                                                  host_ip)))
        mounts = [(volume_dirs[m["name"]] + ("/" + m["subPath"] if m.get("subPath") else ""),
                   m["mountPath"], bool(m.get("readOnly")))
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
                    "entrypoint": c.get("command"), "args": c.get("args"), "env": env,
                    "workdir": c.get("workingDir"), "mounts": mounts,
                    "privileged": bool(sc.get("privileged")), "user": user,
                    "tty": bool(c.get("tty")), "stdin": bool(c.get("stdin"))})
    return out


def _write_files(directory: str, files: dict[str, str | bytes], mode: int = 0o644) -> None:
    os.makedirs(directory, exist_ok=True)
    for name, data in files.items():
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(path, mode)


def prepare_volumes(pod: dict, meta: MetaManager, root: str) -> dict[str, str]:
    """Host directories for the pod's volumes (emptyDir, hostPath, configMap, secret)."""
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    dirs: dict[str, str] = {}
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = vol.get("name") or ""
        path = os.path.join(root, name)
        if "hostPath" in vol:
            dirs[name] = vol["hostPath"].get("path") or "/"
            if (vol["hostPath"].get("type") or "") == "DirectoryOrCreate":
                os.makedirs(dirs[name], exist_ok=True)
        elif "emptyDir" in vol:
            os.makedirs(path, exist_ok=True)
            dirs[name] = path
        elif "configMap" in vol:
            obj = meta.get("configmaps", ns, vol["configMap"].get("name") or "") or {}
            files: dict[str, str | bytes] = dict(obj.get("data") or {})
            files.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
            _write_files(path, files)
            dirs[name] = path
        elif "secret" in vol:
            obj = meta.get("secrets", ns, vol["secret"].get("secretName") or "") or {}
            _write_files(path, {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()},
                         0o600)
            dirs[name] = path
    return dirs
