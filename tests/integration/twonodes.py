"""A server (--disable-agent) and two (or, with `labels="a"`, one) `k3py agent` processes, each in its own network namespace
(netns.py) with its own podman storage (--podman-root), the test image shipped in only as a
tarball in <data-dir>/agent/images/: `two_agent_cluster` makes one and removes everything it
made (pods, pod networks, storages, namespaces), also on failure. With `link`, the two
namespaces also get a direct link of their own and each agent's --node-ip is its end of it, so
the nodes reach each other's node IP (the pod network's host-gw routes)."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from k3py.config import podman_storage_args
from tests.harness import ServerProcess, clean_env, wait_for
from tests.integration.agents import IMAGE, build_test_image, cached_names, remove_pod_networks
from tests.integration.netns import NetNS, require_netns

__all__ = ["Agent", "Cluster", "two_agent_cluster"]

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Agent:
    label: str
    name: str
    ns: NetNS
    data_dir: Path
    podman_root: Path
    log: Path
    args: list[str]
    proc: subprocess.Popen | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def podman(self) -> list[str]:
        return ["podman", *podman_storage_args(str(self.podman_root))]

    def start(self) -> None:
        with open(self.log, "ab") as f:
            self.proc = self.ns.popen(self.args, stdout=f, stderr=subprocess.STDOUT, env=clean_env(),
                                      cwd=str(ROOT))

    def kill9(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-2000:]
        self.proc.send_signal(signal.SIGKILL)  # the agent only: its containers keep running
        self.proc.wait(10)

    def containers(self) -> dict[str, tuple[str, str]]:
        """k3py's app containers (not pods' infra) in this agent's storage: id -> (pod uid,
        state)."""
        out = subprocess.run([*self.podman, "ps", "-a", "--format", "json", "--filter",
                              f"label=io.k3py.node={self.name}"],
                             capture_output=True, text=True, check=True, timeout=60)
        return {c["Id"]: (c["Labels"].get("io.k3py.pod-uid", ""), c["State"])
                for c in json.loads(out.stdout or "[]") if not c.get("IsInfra")}

    def podman_pods(self) -> list[str]:
        out = subprocess.run([*self.podman, "pod", "ps", "--format", "{{.Name}}", "--filter",
                              f"label=io.k3py.node={self.name}"],
                             capture_output=True, text=True, check=True, timeout=60)
        return sorted(out.stdout.split())

    def cached(self, kind: str) -> set[str]:
        """The names of the objects of `kind` this agent holds in its meta.db."""
        return cached_names(self.data_dir / "agent" / "meta.db", kind)

    def connected_since(self, since: float) -> bool:
        import datetime as dt
        for line in self.log.read_text(errors="replace").splitlines():
            if "tunnel connected" in line:
                with contextlib.suppress(ValueError):
                    if dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp() \
                            >= since:
                        return True
        return False


class Cluster:
    def __init__(self, srv: ServerProcess, agents: dict[str, Agent]) -> None:
        self.srv = srv
        self.agents = agents
        self.a, self.b = agents["a"], agents.get("b")  # (None: a one-node cluster)

    def logs(self) -> str:
        out = ["--- server log (tail)", self.srv.log_path.read_text(errors="replace")[-4000:]]
        for ag in self.agents.values():
            out += [f"--- agent {ag.name} log (tail)",
                    ag.log.read_text(errors="replace")[-4000:]]
        return "\n".join(out)

    def wait(self, pred, timeout: float, what: str):
        try:
            return wait_for(pred, timeout, 0.3, what)
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{self.logs()}") from None

    def pod(self, name: str, namespace: str = "default") -> dict:
        return self.srv.kubectl_json("get", "pod", "-n", namespace, name)

    def pod_gone(self, name: str) -> bool:
        return self.srv.kubectl("get", "pod", name, check=False).returncode != 0

    def ready(self, node: str) -> bool:
        n = self.srv.kubectl_json("get", "node", node)
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in n.get("status", {}).get("conditions", []))

    def apply_pod(self, name: str, *, selector: dict | None = None,
                  tolerate: bool = False, script: str = "", restart_policy: str = "",
                  **container) -> None:
        spec: dict = {"terminationGracePeriodSeconds": 5, "containers": [{
            "name": "c", "image": IMAGE, "imagePullPolicy": "Never",
            "command": ["sh", "-c", script or f"echo hello-from-{name}; trap 'exit 0' TERM; "
                        "while true; do sleep 1; done"], **container}]}
        if restart_policy:
            spec["restartPolicy"] = restart_policy
        if selector:
            spec["nodeSelector"] = selector
        if tolerate:
            spec["tolerations"] = [{"key": "dedicated", "operator": "Equal", "value": "b",
                                    "effect": "NoSchedule"}]
        self.srv.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}))

    def running(self, name: str, namespace: str = "default") -> dict | None:
        p = self.pod(name, namespace)
        ok = p.get("status", {}).get("phase") == "Running" and all(
            cs.get("ready") for cs in p["status"].get("containerStatuses") or [{}])
        return p if ok else None


@contextlib.contextmanager
def two_agent_cluster(tmp: Path, node_args: dict[str, list[str]], *, link: bool = False,
                      dual_stack: bool = False,
                      server_args: tuple[str, ...] = (),
                      before_agents: Callable[[ServerProcess], None] | None = None,
                      images: tuple[Path, ...] = (), labels: str = "ab") -> Iterator[Cluster]:
    """Agents "a" and "b" (extra agent flags in `node_args`; `labels="a"`: "a" only), all
    Ready; `before_agents` runs once the server is up, before the agents join; `images`: more
    image tarballs for every agent; `dual_stack`: the link has IPv6 addresses too and each
    agent's --node-ip is "v4,v6"."""
    require_netns()
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed")
    tarball = tmp / "busybox.tar"
    build_test_image(tarball)
    made: list[NetNS] = []
    agents: dict[str, Agent] = {}
    srv = None
    try:
        for _ in labels:
            ns = NetNS()
            made.append(ns)
            ns.create()
        node_ips = dict(zip("ab", made[0].link(made[1], ipv6=dual_stack), strict=True)) \
            if link else {}
        srv = ServerProcess(tmp / "server", extra_args=[
            "--bind-address", "0.0.0.0", "--advertise-address", made[0].host_ip,
            *(a for ns in made[1:] for a in ("--tls-san", ns.host_ip)), *server_args])
        srv.start()
        if before_agents is not None:
            before_agents(srv)
        suffix = uuid.uuid4().hex[:6]
        for label, ns in zip(labels, made, strict=True):
            data = tmp / f"agent-{label}"
            (data / "agent" / "images").mkdir(parents=True)
            for image in (tarball, *images):
                shutil.copy(image, data / "agent" / "images" / image.name)
            name = f"two-{label}-{suffix}"
            extra = [*node_args.get(label, []),
                     *(["--node-ip", node_ips[label]] if label in node_ips else [])]
            args = srv.agent_command(data, name, "--podman-root", str(data / "podman"),
                                     *extra, server=f"https://{ns.host_ip}:{srv.port}")
            agents[label] = Agent(label, name, ns, data, data / "podman",
                                  tmp / f"agent-{label}.log", args)
            agents[label].start()
        c = Cluster(srv, agents)
        for ag in agents.values():
            c.wait(lambda n=ag.name: c.ready(n), 60, f"node {ag.name} Ready")
        yield c
    finally:
        if srv is not None and srv.proc is not None and srv.proc.poll() is None:
            with contextlib.suppress(Exception):
                srv.kubectl("delete", "pods", "--all", "--wait=false", "--grace-period=0",
                            "--force", check=False, timeout=20)
        for ag in agents.values():
            if ag.proc is not None and ag.proc.poll() is None:
                ag.proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    ag.proc.wait(10)
        if srv is not None:
            srv.stop()
        for ag in agents.values():
            # inside the agent's namespace: its pods' bridge is there, and netavark must tear
            # their network down (the IPAM database is shared by the whole host)
            ids = ag.ns.run([*ag.podman, "pod", "ps", "-q"]).stdout.split()
            for pod_id in ids:
                ag.ns.run([*ag.podman, "pod", "rm", "-f", "-t", "0", pod_id], timeout=60)
            subprocess.run([*ag.podman, "rmi", "-a", "-f"], capture_output=True)
            remove_pod_networks(ag.name, tuple(ag.podman), ag.ns)
        for ns in reversed(made):
            ns.destroy()
        for ag in agents.values():
            args = podman_storage_args(str(ag.podman_root))
            subprocess.run(["umount", "-R", str(ag.podman_root / "storage" / "overlay")],
                           capture_output=True)
            shutil.rmtree(ag.podman_root, ignore_errors=True)
            shutil.rmtree(args[args.index("--runroot") + 1], ignore_errors=True)
