"""Smoke test of a built one-file binary: `--version`, `server` ready, `kubectl get ns` through
it, /openapi/v2 served as protobuf (the spec's hidden protobuf import; kubectl 1.27/1.28 ask
for it) and `kubectl apply` of a `kind: List`, the web dashboard from the binary's own files
(`dashboard-url`'s one-time link logs in; /dashboard/ and the assets it names, by their hashed
names, plain and pre-compressed), and an agent of the same binary joining it (node Ready on the
host's podman; with --pod a pod of the offline test image runs on it and `kubectl logs` reads it).

Usage: python3 packaging/smoke_test.py [BINARY] [--qemu ROOT] [--no-agent] [--pod]
  dist/k3py (default) is what .ci/run checks after packaging/build.sh. --qemu ROOT runs a
  foreign-arch binary (dist/k3py-arm64) under qemu-aarch64-static with ROOT (the arm64 root of
  packaging/build-arm64-root.sh) as its library prefix; kubectl and podman stay the host's."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from http.cookies import SimpleCookie
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import ServerProcess, clean_env, wait_for  # noqa: E402
from tests.integration.agents import (  # noqa: E402
    IMAGE,
    build_test_image,
    node_ready,
    remove_podman_pods,
    stop_proc,
)

QEMU = "qemu-aarch64-static"


class BinaryServer(ServerProcess):
    """A `server` of the binary (`runner` in front of it, e.g. qemu) instead of python -m."""

    def __init__(self, runner: list[str], data_dir: Path, env: dict[str, str]) -> None:
        super().__init__(data_dir, env=env)
        self.runner = runner

    def command(self) -> list[str]:
        return [*self.runner, *super().command()[3:]]

    def agent_command(self, data_dir: Path, node: str, *extra: str, server: str = "",
                      token: str = "") -> list[str]:
        return [*self.runner, *super().agent_command(data_dir, node, *extra, server=server,
                                                     token=token)[3:]]


def check_version(runner: list[str], env: dict[str, str]) -> bool:
    out = subprocess.run([*runner, "--version"], capture_output=True, text=True, timeout=120,
                         env=env)
    print(out.stdout.strip() or out.stderr.strip())
    return out.returncode == 0


OPENAPI_PB = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


def check_openapi_and_apply(srv: BinaryServer) -> bool:
    """/openapi/v2 answers protobuf when asked for it, and kubectl applies a `kind: List`."""
    with srv.client() as api:
        method, url, headers, _, _ = api.param_serialize(
            "GET", "/openapi/v2", header_params={"Accept": OPENAPI_PB},
            auth_settings=["BearerToken"])
        resp = api.call_api(method, url, header_params=headers, _request_timeout=60)
        resp.read()
        ctype, body = resp.getheader("Content-Type") or "", resp.data
    # the answer's type is upstream's spelling (…spec.v2.v1.0+protobuf); a Document's first
    # field is swagger: "2.0"
    if (resp.status != 200 or not ctype.startswith("application/com.github.proto-openapi")
            or not body.startswith(b'\n\x032.0')):
        print(f"smoke: /openapi/v2 as protobuf: {resp.status} {ctype!r} {body[:80]!r}",
              file=sys.stderr)
        return False
    items = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"smoke-{i}"},
              "data": {"i": str(i)}} for i in range(2)]
    listed = {"apiVersion": "v1", "kind": "List", "items": items}
    out = srv.kubectl("apply", "-f", "-", input=json.dumps(listed)).stdout
    if out.count("configmap/smoke-") != 2:
        print(f"smoke: kubectl apply of a List: {out}", file=sys.stderr)
        return False
    print(f"smoke: /openapi/v2 protobuf ({len(body)} bytes), kubectl apply of a List ok")
    return True


def _dashboard_get(srv: BinaryServer, tls: ssl.SSLContext, path: str,
                   headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(srv.url + path, headers=headers)
    with urllib.request.urlopen(req, context=tls, timeout=30) as r:
        return r.status, dict(r.headers), r.read()


def check_dashboard(srv: BinaryServer, runner: list[str], env: dict[str, str]) -> bool:
    """The binary's `dashboard-url` link logs in (the session answers as the admin); the page
    and every asset it names are served from the binary's packaged files: each hashed name
    matches its body, and its gzip variant is the same file."""
    tls = ssl.create_default_context(
        cafile=str(srv.data_dir / "server" / "tls" / "server-ca.crt"))
    out = subprocess.run([*runner, "dashboard-url", "--data-dir", str(srv.data_dir),
                          "--server", srv.url], capture_output=True, text=True, timeout=120,
                         env=env)
    link = out.stdout.split()[0] if out.stdout.split() else ""
    if out.returncode != 0 or "#login=" not in link:
        print(f"smoke: dashboard-url: {out.stdout}{out.stderr}", file=sys.stderr)
        return False
    login = urllib.request.Request(
        srv.url + "/dashboard/login", method="POST",
        data=json.dumps({"code": link.split("#login=", 1)[1]}).encode(),
        headers={"Content-Type": "application/json", "X-K3py-Dashboard": "1"})
    with urllib.request.urlopen(login, context=tls, timeout=30) as r:
        cookie = SimpleCookie(r.headers["Set-Cookie"])["k3py-dashboard"].value
    _, _, body = _dashboard_get(srv, tls, "/dashboard/api/session", {
        "Cookie": f"k3py-dashboard={cookie}", "X-K3py-Dashboard": "1"})
    user = json.loads(body)["user"]
    status, headers, page = _dashboard_get(srv, tls, "/dashboard/", {})
    names = re.findall(r'(?:src|href)="([^"]+)"', page.decode())
    if (user != "system:admin" or status != 200
            or "default-src 'self'" not in headers.get("Content-Security-Policy", "")
            or not any(re.fullmatch(r"app\.[0-9a-f]{12}\.js", n) for n in names)):
        print(f"smoke: dashboard: session of {user!r}, /dashboard/ {status} {headers} "
              f"{page[:300]!r}", file=sys.stderr)
        return False
    for name in names:
        _, _, plain = _dashboard_get(srv, tls, "/dashboard/" + name, {})
        _, zheaders, zipped = _dashboard_get(srv, tls, "/dashboard/" + name,
                                             {"Accept-Encoding": "gzip"})
        digest = re.fullmatch(r".+\.([0-9a-f]{12})\.\w+", name)
        if (not digest or hashlib.sha256(plain).hexdigest()[:12] != digest[1]
                or zheaders.get("Content-Encoding") != "gzip"
                or gzip.decompress(zipped) != plain):
            print(f"smoke: dashboard asset {name}: {len(plain)} bytes, gzip {zheaders}",
                  file=sys.stderr)
            return False
    print(f"smoke: dashboard login as {user}, /dashboard/ and {len(names)} assets "
          f"({', '.join(names)}) plain and gzipped ok")
    return True


def check_pod(srv: BinaryServer, tmp: Path, node: str, timeout: float) -> bool:
    """A pod of the offline test image runs on the node and its log comes back through the
    tunnel (`kubectl logs`)."""
    build_test_image(tmp / "busybox.tar")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "smoke"},
           "spec": {"nodeName": node, "containers": [{
               "name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
               "command": ["sh", "-c", "echo hi-from-k3py; trap 'exit 0' TERM; "
                           "while true; do sleep 1; done"]}]}}
    srv.kubectl("apply", "-f", "-", input=json.dumps(pod))
    t0 = time.monotonic()
    try:
        wait_for(lambda: srv.kubectl_json("get", "pod", "smoke")["status"].get("phase")
                 == "Running", timeout, 0.5, "pod smoke Running")
        wait_for(lambda: "hi-from-k3py" in srv.kubectl("logs", "smoke").stdout, timeout, 0.5,
                 "kubectl logs smoke")
    except TimeoutError as e:
        print(f"smoke: pod did not run: {e}", file=sys.stderr)
        return False
    print(f"smoke: pod Running on {node} in {time.monotonic() - t0:.2f}s, kubectl logs ok")
    return True


def check_agent(srv: BinaryServer, tmp: Path, env: dict[str, str], arch: str,
                timeout: float, pod: bool) -> bool:
    """An agent of the binary joins: its node turns Ready with podman as its runtime (and,
    with `pod`, runs a pod)."""
    node = f"smoke-{uuid.uuid4().hex[:6]}"
    log_path = tmp / "agent.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(srv.agent_command(tmp / "agent", node), stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        t0 = time.monotonic()
        try:
            n = wait_for(lambda: proc.poll() is None and node_ready(srv, node), timeout, 0.5,
                         f"node {node} Ready")
        except TimeoutError as e:
            print(f"smoke: agent did not join: {e}\n{log_path.read_text()[-3000:]}",
                  file=sys.stderr)
            return False
        info = n["status"]["nodeInfo"]
        print(f"smoke: agent joined in {time.monotonic() - t0:.2f}s: node {node} Ready, "
              f"{info['architecture']}, {info['containerRuntimeVersion']}")
        if info["architecture"] != arch:
            print(f"smoke: node architecture {info['architecture']}, expected {arch}",
                  file=sys.stderr)
            return False
        return not pod or check_pod(srv, tmp, node, timeout)
    finally:
        stop_proc(proc)
        remove_podman_pods(node)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary", nargs="?", default="dist/k3py")
    ap.add_argument("--qemu", metavar="ROOT", help="run the arm64 binary under "
                    f"{QEMU} with this arm64 root as its library prefix")
    ap.add_argument("--no-agent", action="store_true", help="skip the agent join")
    ap.add_argument("--pod", action="store_true", help="also run a pod of the offline test "
                    "image on the agent's node (airgap/build-test-image.sh)")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    env = clean_env()
    runner, arch, timeout = [binary], "amd64", 60.0
    if args.qemu:
        # the variable reaches the bootloader's re-exec of itself, which binfmt runs in qemu
        env["QEMU_LD_PREFIX"] = os.path.abspath(args.qemu)
        runner, arch, timeout = [QEMU, binary], "arm64", 300.0
    if not check_version(runner, env):
        print("smoke: --version failed", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        srv = BinaryServer(runner, Path(tmp) / "data", env)
        try:
            t0 = time.monotonic()
            srv.start(timeout=timeout)
            print(f"smoke: server ready in {time.monotonic() - t0:.2f}s")
            out = srv.kubectl("get", "ns")
            print(out.stdout)
            if "default" not in out.stdout or "kube-system" not in out.stdout:
                print("smoke: kubectl get ns did not list the system namespaces",
                      file=sys.stderr)
                return 1
            if not check_openapi_and_apply(srv) or not check_dashboard(srv, runner, env):
                return 1
            if not args.no_agent and not check_agent(srv, Path(tmp), env, arch, timeout,
                                                     args.pod):
                return 1
        finally:
            srv.stop()
    print("smoke: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
