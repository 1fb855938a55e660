"""install.sh for real, as a user runs it: `curl -sfL http://MIRROR/install.sh | sh -` against
a mirror on 127.0.0.1 serving the built binary and its checksum file, inside a throwaway root
(a new mount and network namespace: /etc, /usr/local/bin, /opt, /var/log and the systemd
directory are private copies, 127.0.0.1:6443 is the namespace's own).

Server flavour with the defaults: downloads and verifies the binary, writes the unit, its env
file (0600), k3py-killall.sh and k3py-uninstall.sh; with no systemd in reach it runs the server
under its restart loop, and kubectl works with /etc/k3py/k3py.yaml. A re-run upgrades in place
and keeps the data; a corrupted download is refused by its checksum; the uninstall script
leaves nothing of k3py behind. The unit passes `systemd-analyze verify`.

Under a real systemd as PID 1 (a privileged podman container started with --systemd=always on
an overlay of the Debian 12 root with podman that packaging/systemd-root.sh caches; the test
builds it, ~3 min, when scripts/setup.sh has not): the unit is active once the server said
READY=1 (Type=notify), kubectl works, a kill -9 of its main process is followed by systemd's
restart, a re-run keeps the data, and the uninstall script leaves the root's file tree as it
was before the install. The agent flavour in the same container: K3PY_URL + K3PY_TOKEN install
k3py-agent.service joining a server installed there, its Node turns Ready, a pod runs in the
container's podman and keeps running through a kill -9 of the agent and systemd's restart;
the uninstall removes that cluster's pods and pod network and keeps another cluster's.

Needs the one-file binary (dist/k3py-amd64 or dist/k3py: .ci/run builds it before the tests,
else the fixture runs packaging/build.sh) and root for the namespaces (skipped otherwise)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.harness import KUBECTL, free_port
from tests.integration.agents import IMAGE, build_test_image

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _binary() -> Path | None:
    for name in ("k3py-amd64", "k3py"):
        if (ROOT / "dist" / name).is_file():
            return ROOT / "dist" / name
    return None


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a throwaway root")
    if _binary() is None:  # .ci/run builds it first; from a bare checkout, build it here
        out = subprocess.run(["sh", "packaging/build.sh"], cwd=ROOT, capture_output=True,
                             text=True, timeout=1200)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    binary = _binary()
    assert binary is not None, "packaging/build.sh made no dist/k3py"
    d = tmp_path_factory.mktemp("mirror")
    shutil.copy(binary, d / "k3py-amd64")
    shutil.copy(ROOT / "install.sh", d / "install.sh")
    out = subprocess.run(["sha256sum", "k3py-amd64"], cwd=d, capture_output=True, text=True,
                         check=True)
    (d / "sha256sum-amd64.txt").write_text(out.stdout)
    bad = d / "bad"
    bad.mkdir()
    (bad / "k3py-amd64").write_bytes(binary.read_bytes()[:-100] + b"x" * 100)
    (bad / "sha256sum-amd64.txt").write_text(out.stdout)
    return d


def in_throwaway_root(tmp: Path, mirror: Path, script: str) -> subprocess.CompletedProcess:
    """Run `script` (sh) in new mount and network namespaces with private copies of the
    directories install.sh writes; $MIRROR is the mirror's URL inside."""
    port = free_port()
    prelude = textwrap.dedent(f"""
        set -eu
        ip link set lo up
        for d in /etc /usr/local/bin; do
            mkdir -p "{tmp}/root$d"
            cp -a "$d/." "{tmp}/root$d/"
            mount --bind "{tmp}/root$d" "$d"
        done
        for d in /opt /var/log; do
            mkdir -p "{tmp}/root$d"
            mount --bind "{tmp}/root$d" "$d"
        done
        rm -rf /etc/k3py /etc/systemd/system/k3py*
        cd "{mirror}"
        python3 -m http.server --bind 127.0.0.1 {port} >/dev/null 2>&1 &
        MIRROR_PID=$!
        trap 'kill $MIRROR_PID 2>/dev/null || true' EXIT
        i=0; until curl -sf -o /dev/null http://127.0.0.1:{port}/install.sh; do
            i=$((i+1)); [ $i -lt 100 ] || exit 9; sleep 0.1; done
        MIRROR=http://127.0.0.1:{port}
        export INSTALL_K3PY_NAME=test
        export K3PY_DATA_DIR="{tmp}/data"
    """)
    return subprocess.run(["unshare", "--mount", "--net", "--propagation", "private", "sh",
                           "-c", prelude + textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=600)


def test_server_install_rerun_and_uninstall(mirror, tmp_path):
    out = in_throwaway_root(tmp_path, mirror, """
        curl -sfL "$MIRROR/install.sh" | INSTALL_K3PY_CHANNEL_URL="$MIRROR" sh -s - server \\
            --disable-agent
        kubectl --kubeconfig /etc/k3py/k3py.yaml get ns default -o name
        echo "ENVMODE $(stat -c %a /etc/systemd/system/k3py-test.service.env)"
        grep -q '^ExecStart=/usr/local/bin/k3py server .--disable-agent.$' \\
            /etc/systemd/system/k3py-test.service && echo UNIT-OK
        grep -q '^Type=notify$' /etc/systemd/system/k3py-test.service && echo NOTIFY-OK
        systemd-analyze verify /etc/systemd/system/k3py-test.service 2>&1 \\
            | grep -v -e 'Failed to put bus name' -e 'Cannot determine' -e network-online \\
                      -e 'systemd-analyze' || true
        kubectl --kubeconfig /etc/k3py/k3py.yaml create configmap kept --from-literal=a=b
        # a re-run upgrades in place and keeps the data
        curl -sfL "$MIRROR/install.sh" | INSTALL_K3PY_CHANNEL_URL="$MIRROR" sh -s - server \\
            --disable-agent
        kubectl --kubeconfig /etc/k3py/k3py.yaml get configmap kept -o name
        # a download that does not match its checksum is refused, the installed one stays
        if curl -sfL "$MIRROR/install.sh" | INSTALL_K3PY_CHANNEL_URL="$MIRROR/bad" sh -; then
            echo BAD-ACCEPTED
        fi
        /usr/local/bin/k3py --version >/dev/null && echo STILL-INSTALLED
        /usr/local/bin/k3py-test-uninstall.sh
        ls /usr/local/bin/k3py* /etc/systemd/system/k3py* /etc/k3py "$K3PY_DATA_DIR" \\
            /opt/k3py 2>/dev/null | sed 's/^/LEFT /' || true
        pgrep -f '^/usr/local/bin/k3py server' | sed 's/^/PROC /' || true
    """)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "namespace/default" in out.stdout, text
    assert "ENVMODE 600" in out.stdout and "UNIT-OK" in out.stdout, text
    assert "NOTIFY-OK" in out.stdout, text
    assert "no systemd here" in out.stdout, text
    assert "configmap/kept" in out.stdout, text
    assert "checksum mismatch" in out.stderr, text
    assert "BAD-ACCEPTED" not in out.stdout and "STILL-INSTALLED" in out.stdout, text
    assert "[k3py] uninstalled" in out.stdout, text
    assert "LEFT" not in out.stdout and "PROC" not in out.stdout, text
    assert not [line for line in out.stdout.splitlines() if "k3py-test.service:" in line], text


def test_agent_install_needs_url_and_token(mirror, tmp_path):
    out = in_throwaway_root(tmp_path, mirror, """
        if curl -sfL "$MIRROR/install.sh" | INSTALL_K3PY_CHANNEL_URL="$MIRROR" sh -s - agent; then
            echo NO-URL-ACCEPTED
        fi
        if curl -sfL "$MIRROR/install.sh" | K3PY_URL=https://192.0.2.1:6443 \\
                INSTALL_K3PY_CHANNEL_URL="$MIRROR" sh -; then
            echo NO-TOKEN-ACCEPTED
        fi
        curl -sfL "$MIRROR/install.sh" | K3PY_URL=https://192.0.2.1:6443 K3PY_TOKEN=secret \\
            INSTALL_K3PY_SKIP_START=true INSTALL_K3PY_SKIP_PODMAN=true \\
            INSTALL_K3PY_CHANNEL_URL="$MIRROR" sh -s - --node-label site=pole7
        cat /etc/systemd/system/k3py-test.service.env
        grep '^ExecStart=' /etc/systemd/system/k3py-test.service
        if command -v shellcheck >/dev/null; then
            shellcheck -s sh /usr/local/bin/k3py-killall.sh /usr/local/bin/k3py-test-uninstall.sh \
                && echo SHELLCHECK-CLEAN
        else echo SHELLCHECK-CLEAN; fi
        /usr/local/bin/k3py-test-uninstall.sh
    """)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "an agent needs K3PY_URL" in out.stderr, text
    assert "K3PY_TOKEN is not" in out.stderr, text
    assert "NO-URL-ACCEPTED" not in out.stdout and "NO-TOKEN-ACCEPTED" not in out.stdout, text
    assert 'K3PY_URL="https://192.0.2.1:6443"' in out.stdout, text
    assert 'K3PY_TOKEN="secret"' in out.stdout, text
    assert "ExecStart=/usr/local/bin/k3py agent '--node-label' 'site=pole7'" in out.stdout, text
    assert "SHELLCHECK-CLEAN" in out.stdout, text  # the scripts the installer wrote


def test_airgapped_agent_joins_the_installed_server(mirror, tmp_path):
    """K3s's air-gap steps: the binary is put in INSTALL_K3PY_BIN_DIR by hand and
    INSTALL_K3PY_SKIP_DOWNLOAD=true installs an agent from it with the mirror gone; the agent
    joins the server installed before it and its Node turns Ready."""
    out = in_throwaway_root(tmp_path, mirror, f"""
        curl -sfL "$MIRROR/install.sh" | INSTALL_K3PY_CHANNEL_URL="$MIRROR" sh -s - server \\
            --disable-agent
        TOKEN=$(/usr/local/bin/k3py token)
        mkdir -p /opt/airgap-bin
        cp "{mirror}/k3py-amd64" /opt/airgap-bin/k3py
        chmod 0755 /opt/airgap-bin/k3py
        kill $MIRROR_PID  # nothing left to download from
        INSTALL_K3PY_SKIP_DOWNLOAD=true INSTALL_K3PY_BIN_DIR=/opt/airgap-bin \\
            INSTALL_K3PY_NAME=edge INSTALL_K3PY_SKIP_PODMAN=true \\
            K3PY_URL=https://127.0.0.1:6443 K3PY_TOKEN="$TOKEN" \\
            sh "{mirror}/install.sh" --node-name pole7 --node-ip 127.0.0.1
        i=0
        until kubectl --kubeconfig /etc/k3py/k3py.yaml get node pole7 \\
                -o 'jsonpath={{.status.conditions[?(@.type=="Ready")].status}}' 2>/dev/null \\
                | grep -q True; do
            i=$((i+1)); [ $i -lt 240 ] || break; sleep 0.5
        done
        kubectl --kubeconfig /etc/k3py/k3py.yaml get node pole7 --no-headers | sed 's/^/NODE /'
        /opt/airgap-bin/k3py-edge-uninstall.sh
        /usr/local/bin/k3py-test-uninstall.sh
        ls /opt/airgap-bin/k3py* /usr/local/bin/k3py* /etc/systemd/system/k3py* /etc/k3py \\
            "$K3PY_DATA_DIR" 2>/dev/null | sed 's/^/LEFT /' || true
        pgrep -f '^(/opt/airgap-bin|/usr/local/bin)/k3py (server|agent)' | sed 's/^/PROC /' || true
    """)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "using the existing /opt/airgap-bin/k3py" in out.stdout, text
    assert "NODE pole7" in out.stdout and " Ready " in out.stdout, text
    assert "LEFT" not in out.stdout and "PROC" not in out.stdout, text


def _kubectl_binary() -> Path:
    """The kubectl executable itself (a pyenv shim is a script that needs the host's pyenv)."""
    for candidate in (shutil.which(KUBECTL), Path(sys.executable).parent / "kubectl"):
        if candidate and Path(candidate).is_file():
            with open(candidate, "rb") as f:
                if f.read(4) == b"\x7fELF":
                    return Path(candidate).resolve()
    pytest.skip("no kubectl executable to mount in the systemd container")


@pytest.fixture(scope="module")
def systemd_root():
    if shutil.which("podman") is None or shutil.which("debootstrap") is None:
        pytest.skip("needs podman and debootstrap for a systemd root")
    out = subprocess.run(["sh", "packaging/systemd-root.sh"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def systemd_host(mirror, systemd_root, tmp_path_factory):
    """A podman container with systemd as PID 1 on an overlay of the systemd root, booted, the
    mirror served on 127.0.0.1:<port> inside: a host of its own for the tests below.
    What lets podman run pods inside, on a cgroup-v1 host too: --privileged (rw cgroup
    hierarchies and /proc/sys, bridges, mounts); --cgroupns=private (in the host's cgroup
    namespace, runc with the systemd cgroup manager looks for the pod's scope at the path
    /proc/self/cgroup names, which is not where the container's hierarchy is mounted: "error
    mounting cgroup ... no such file or directory"); a tmpfs at /var/lib/containers (overlayfs
    cannot stack on the container's overlay root, and there is no /dev/fuse for
    fuse-overlayfs). --network none gives it its own network namespace, so its agent's
    cluster DNS address, ports and pod networks are its own."""
    image = build_test_image(tmp_path_factory.mktemp("image") / "busybox.tar")
    name = f"k3py-systemd-test-{os.getpid()}"
    subprocess.run(["podman", "run", "-d", "--name", name, "--systemd=always", "--privileged",
                    "--cgroupns=private",
                    "--network", "none", "--tmpfs", "/var/lib/containers",
                    "-v", f"{mirror}:/mirror:ro", "-v", f"{image}:/images/busybox.tar:ro",
                    "-v", f"{_kubectl_binary()}:/opt/hostbin/kubectl:ro",
                    "--rootfs", f"{systemd_root}:O", "/sbin/init"],
                   check=True, capture_output=True, timeout=60)
    try:
        port = free_port()
        out = in_systemd_host(name, f"""
            i=0; until systemctl is-system-running --wait >/dev/null 2>&1 \\
                    || [ "$(systemctl is-system-running)" = degraded ]; do
                i=$((i+1)); [ $i -lt 60 ] || {{ echo NO-BOOT; exit 9; }}; sleep 0.5; done
            busybox httpd -p 127.0.0.1:{port} -h /mirror
        """)
        assert out.returncode == 0, out.stdout + out.stderr
        yield name, f"http://127.0.0.1:{port}"
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, timeout=60)


def in_systemd_host(name: str, script: str, mirror: str = "") -> subprocess.CompletedProcess:
    """Run `script` (sh, set -eu) in the systemd container; $MIRROR is the mirror's URL, k()
    is kubectl with the installed server's kubeconfig, tree() lists the root's files but for
    what systemd, podman and the test itself change; until_ok retries a command for 60 s, kill9
    UNIT kills the unit's main process and waits for systemd's restart, leftovers prints what
    an uninstall left behind (see nothing_left)."""
    prelude = textwrap.dedent(f"""
        set -eu
        MIRROR={mirror}
        k() {{ /opt/hostbin/kubectl --kubeconfig /etc/k3py/k3py.yaml --cache-dir /tmp/kube "$@"; }}
        until_ok() {{ i=0; until "$@" >/dev/null 2>&1; do
            i=$((i+1)); [ $i -lt 120 ] || {{ echo "TIMEOUT $*"; return 9; }}; sleep 0.5; done; }}
        kill9() {{  # kill -9 of the unit's main process; then systemd's (first) restart
            pid=$(systemctl show -p MainPID --value "$1")
            kill -9 "$pid"
            i=0; until [ "$(systemctl show -p NRestarts --value "$1")" = 1 ] \
                    && systemctl is-active -q "$1"; do
                i=$((i+1)); [ $i -lt 60 ] || {{ echo "NO-RESTART $1"; exit 9; }}; sleep 0.5; done
            new=$(systemctl show -p MainPID --value "$1")
            [ "$new" != "$pid" ] && [ "$new" != 0 ] && echo "RESTARTED $1"; }}
        leftovers() {{  # what an uninstall left: k3py units, processes, files not in /tmp/before
            systemctl list-units --all --plain --no-legend 'k3py*' | sed 's/^/UNIT /'
            pgrep -x k3py | sed 's/^/PROC /' || true
            tree > /tmp/after
            diff /tmp/before /tmp/after | grep '^[<>]' | sed 's/^/LEFT /' || true
            podman pod ls -q | sed 's/^/LEFT pod /'
            podman network ls -q | grep -vx podman | sed 's/^/LEFT network /' || true; }}
        tree() {{ find / -xdev \\( -path /var/log/journal -o -path /var/lib/systemd \\
            -o -path /var/cache -o -path /tmp -o -path /mirror -o -path /opt/hostbin \\
            -o -path /images -o -path /etc/containers/networks \\) -prune -o -print | sort; }}
    """)
    return subprocess.run(["podman", "exec", name, "sh", "-c",
                           prelude + textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=300)


def nothing_left(out: subprocess.CompletedProcess) -> None:
    """`leftovers` printed nothing: no k3py unit, process, file, pod or pod network stayed
    after the uninstall."""
    left = [line for line in out.stdout.splitlines()
            if line.startswith(("UNIT ", "PROC ", "LEFT "))]
    assert not left, "\n".join(left) + "\n" + out.stdout + out.stderr


QUICKSTART = ROOT / "docs" / "quickstart.md"
# Where the test's host differs from the page's reader's: no network but the mirror, and an
# images tarball holding only the busybox image the page's Deployment runs (a plain tar: the
# agent tells it from a .tar.zst by its first bytes; the full airgap/build.sh takes minutes).
# A line that starts with a key is replaced by its value (None: dropped).
QUICKSTART_LINES = {
    "sh install.sh": None,  # the checkout alternative to curl | sh
    "curl -fLO https://dl.k8s.io/": "cp /opt/hostbin/kubectl kubectl",
    "sh airgap/build.sh": "mkdir -p dist && cp /images/busybox.tar "
                          "dist/k3py-airgap-images-amd64.tar.zst",
}


def quickstart_commands() -> str:
    """The ```sh blocks of docs/quickstart.md in order, QUICKSTART_LINES applied, the page's
    http://MIRROR the test's mirror."""
    lines: list[str] = []
    used: set[str] = set()
    lang = None
    for line in QUICKSTART.read_text().splitlines():
        if line.startswith("```"):
            lang = None if lang is not None else line[3:].strip()
            continue
        if lang != "sh":
            continue
        for prefix, replacement in QUICKSTART_LINES.items():
            if line.startswith(prefix):
                used.add(prefix)
                line = replacement
                break
        if line is not None:
            lines.append(line.replace("http://MIRROR", "$MIRROR"))
    assert used == set(QUICKSTART_LINES), \
        f"docs/quickstart.md changed: no line starts with {set(QUICKSTART_LINES) - used}"
    return "\n".join(lines)


def test_quickstart_server_under_systemd(systemd_host):
    """docs/quickstart.md's commands as a reader runs them (the server with its own node, the
    images tarball, a Deployment scaled to 3); then the unit: active once the server said
    READY=1 (Type=notify), Restart=always (test_agent_under_systemd kills the binary's main
    process -9 and sees systemd restart it), a re-run keeping the data, and the uninstall
    leaving the root as before the install."""
    name, mirror = systemd_host
    out = in_systemd_host(name, f"""
        tree > /tmp/before
        mkdir -p /tmp/checkout && cd /tmp/checkout
        {textwrap.indent(quickstart_commands(), " " * 8).lstrip()}
        k3py kubectl rollout status deployment/hello --timeout=60s
        echo "RUNNING $(k get pods -l app=hello --no-headers | grep -c ' Running ')"
        echo "STATE $(systemctl show -p ActiveState,SubState,Type,Restart k3py | sort \\
            | tr '\\n' ' ')"
        k create configmap kept --from-literal=a=b
        # a re-run upgrades in place, the data stays
        curl -sfL "$MIRROR/install.sh" | INSTALL_K3PY_CHANNEL_URL="$MIRROR" sh -
        systemctl is-active -q k3py && echo ACTIVE-AGAIN
        k get configmap kept -o name
        /usr/local/bin/k3py-uninstall.sh
        rm -rf /usr/bin/kubectl /root/.kube  # the reader's own kubectl and its cache
        leftovers
    """, mirror)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "imported image k3py.local/busybox:latest" in out.stdout, text
    assert "hello from hello-" in out.stdout and "RUNNING 3" in out.stdout, text
    assert "STATE ActiveState=active Restart=always SubState=running Type=notify" in out.stdout, \
        text
    assert "ACTIVE-AGAIN" in out.stdout and "configmap/kept" in out.stdout.splitlines(), text
    assert "[k3py] uninstalled" in out.stdout, text
    nothing_left(out)


def test_agent_under_systemd(systemd_host):
    """K3PY_URL + K3PY_TOKEN install k3py-agent.service beside a server (--disable-agent, both
    on the default data dir, as K3s's server and agent share theirs): the agent's Node turns
    Ready, a pod from the air-gapped images tarball runs in the container's podman, a kill -9
    of the agent is followed by systemd's restart with the pod's container kept. The
    uninstall (k3py-killall.sh) removes this cluster's pods and pod network, and leaves those
    of another cluster on the host alone."""
    name, mirror = systemd_host
    out = in_systemd_host(name, f"""
        tree > /tmp/before
        curl -sfL "$MIRROR/install.sh" | INSTALL_K3PY_CHANNEL_URL="$MIRROR" sh -s - server \\
            --disable-agent
        mkdir -p /var/lib/k3py/agent/images
        cp /images/busybox.tar /var/lib/k3py/agent/images/
        curl -sfL "$MIRROR/install.sh" | K3PY_URL=https://127.0.0.1:6443 \\
            K3PY_TOKEN="$(k3py token)" INSTALL_K3PY_CHANNEL_URL="$MIRROR" sh -s - \\
            --node-name pole7
        echo "STATE $(systemctl show -p ActiveState,SubState,Type k3py-agent | sort \\
            | tr '\\n' ' ')"
        until_ok k get node pole7
        k wait --for=condition=Ready node/pole7 --timeout=60s
        k run sleeper --image={IMAGE} --image-pull-policy=Never --restart=Never \\
            --command -- sleep 3600
        k wait --for=condition=Ready pod/sleeper --timeout=60s || {{
            k describe pod sleeper | tail -5; journalctl -u podman -u k3py-agent | tail -20
            exit 9; }}
        ctr=$(podman ps -q --filter label=io.k3py.pod-name=sleeper --filter \\
            label=io.k3py.container=sleeper)
        [ -n "$ctr" ] && echo POD-IN-PODMAN
        # systemd restarts the agent after a kill -9 of its main process (the one-file
        # binary's bootloader: its Python child goes with it); its pod keeps running
        kill9 k3py-agent
        k wait --for=condition=Ready node/pole7 --timeout=60s
        [ "$(podman ps -q --filter label=io.k3py.pod-name=sleeper --filter \\
            label=io.k3py.container=sleeper)" = "$ctr" ] && echo POD-KEPT
        k get pod sleeper -o \\
            'jsonpath=RESTARTS {{.status.containerStatuses[0].restartCount}} {{.status.phase}}'
        echo
        # another cluster's pod and pod network on this host (k3py-killall.sh must keep them)
        podman network create --label io.k3py.network=pods \\
            --label io.k3py.cluster=0123456789ab k3py-0123456789ab-other >/dev/null
        podman pod create --name other --label io.k3py.pod-uid=other \\
            --label io.k3py.cluster=0123456789ab >/dev/null
        cluster=$(sha256sum /var/lib/k3py/server/tls/server-ca.crt | cut -c1-12)
        /usr/local/bin/k3py-agent-uninstall.sh
        /usr/local/bin/k3py-uninstall.sh
        podman pod ls -q --filter "label=io.k3py.cluster=$cluster" | sed 's/^/POD-LEFT /'
        podman network ls -q | grep "^k3py-$cluster-" | sed 's/^/NET-LEFT /' || true
        podman pod exists other && podman network exists k3py-0123456789ab-other \\
            && echo OTHER-KEPT
        podman pod rm -f other >/dev/null && podman network rm k3py-0123456789ab-other >/dev/null
        leftovers
    """, mirror)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "STATE ActiveState=active SubState=running Type=notify" in out.stdout, text
    assert "node/pole7 condition met" in out.stdout, text
    assert "pod/sleeper condition met" in out.stdout and "POD-IN-PODMAN" in out.stdout, text
    assert "RESTARTED k3py-agent" in out.stdout and "POD-KEPT" in out.stdout, text
    assert "RESTARTS 0 Running" in out.stdout, text
    assert "OTHER-KEPT" in out.stdout, text
    assert "POD-LEFT" not in out.stdout and "NET-LEFT" not in out.stdout, text
    nothing_left(out)
