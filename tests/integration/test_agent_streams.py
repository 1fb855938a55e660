"""Pod streams beyond logs: kubectl port-forward (websocket-tunneled SPDY and plain SPDY, a
server bound to 127.0.0.1 inside the pod), exec over SPDY, attach, cp both ways, and the
Status errors of those subresources.

One `k3py server` with its embedded agent runs real busybox pods on podman (the offline test
image); everything is driven by the real kubectl. Podman pods removed at teardown."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time

import pytest

from tests.harness import KUBECTL, sampling_rss, wait_for
from tests.integration.agents import (
    IMAGE,
    container_status,
    embedded_node,
    fetch,
    kubectl_env,
    kubectl_popen,
    port_forward,
    read_until,
    running_unrestarted,
    stop_proc,
)

pytestmark = pytest.mark.integration

def _pod(name: str, node: str, script: str, **container) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script], **container}]}}


PODS = {
    # busybox httpd on all addresses, and one bound to the pod's loopback only
    "web": dict(script="mkdir -p /www && echo hello-web > /www/index.html && "
                       "i=0; while [ $i -lt 3000 ]; do echo line-$i-$i-$i-$i-$i-$i-$i-$i-$i; "
                       "i=$((i+1)); done > /www/big.txt && exec httpd -f -p 8080 -h /www",
                ports=[{"containerPort": 8080}]),
    # 48 MB of random bytes, served as fast as the pod can write them
    "bulk": dict(script="mkdir -p /www && head -c 48000000 /dev/urandom > /www/bulk.bin && "
                        "exec httpd -f -p 8082 -h /www"),
    "local": dict(script="mkdir -p /www && echo hello-local > /www/index.html && "
                         "exec httpd -f -p 127.0.0.1:8081 -h /www"),
    # attach targets: one echoing its stdin, one printing a tick every 0.2 s
    "echo": dict(script="while read l; do echo got:$l; done; sleep 3600", stdin=True),
    "echo2": dict(script="while read l; do echo got:$l; done; sleep 3600", stdin=True),
    "shell": dict(script="exec sh", stdin=True, tty=True),
    "ticker": dict(script="i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done"),
    "done": dict(script="echo finished", restartPolicy=None),
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with embedded_node(tmp_path_factory.mktemp("streams"), "str", timeout=30) as srv:
        node = srv.node
        items = []
        for name, p in PODS.items():
            extra = {k: v for k, v in p.items() if k not in ("script", "restartPolicy")}
            pod = _pod(name, node, p["script"], **extra)
            if "restartPolicy" in p:
                pod["spec"]["restartPolicy"] = "Never"
            pod["metadata"]["labels"] = {"app": name}
            items.append(pod)
        items.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                      "spec": {"selector": {"app": "web"},
                               "ports": [{"port": 80, "targetPort": 8080}]}})
        srv.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(i) for i in items))

        def phases():
            out = srv.kubectl_json("get", "pods")
            got = {p["metadata"]["name"]: p["status"].get("phase") for p in out["items"]}
            want = {n: "Succeeded" if n == "done" else "Running" for n in PODS}
            return got == want
        wait_for(phases, 60, 0.3, "pods Running (and done Succeeded)")
        yield srv


@pytest.mark.parametrize("websockets", ["true", "false"])
def test_port_forward(cluster, websockets):
    env = {"KUBECTL_PORT_FORWARD_WEBSOCKETS": websockets}
    proc, local = port_forward(cluster, "pod/web", 8080, env)
    try:
        for _ in range(3):  # several connections over one session
            assert fetch(f"http://127.0.0.1:{local}/") == "hello-web\n"
        big = fetch(f"http://127.0.0.1:{local}/big.txt")  # ~150 KB: many frames
        assert big.splitlines()[2999] == "line-2999" + "-2999" * 8
    finally:
        stop_proc(proc)
    # a service resolves to one of its pods (client side), its port to the targetPort
    proc, local = port_forward(cluster, "svc/web", 80, env)
    try:
        assert fetch(f"http://127.0.0.1:{local}/") == "hello-web\n"
    finally:
        stop_proc(proc)
    # a server bound to 127.0.0.1 inside the pod is reached through the pod's own loopback
    proc, local = port_forward(cluster, "pod/local", 8081, env)
    try:
        assert fetch(f"http://127.0.0.1:{local}/") == "hello-local\n"
    finally:
        stop_proc(proc)


def test_port_forward_with_the_python_client(cluster):
    # the official client speaks the websocket channel protocol (v4.channel.k8s.io)
    from kubernetes import client
    from kubernetes.stream import portforward
    api = client.CoreV1Api(cluster.client())
    pf = portforward(api.connect_get_namespaced_pod_portforward, "local", "default",
                     ports="8081")
    sock = pf.socket(8081)
    sock.settimeout(20)
    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.") and data.endswith(b"hello-local\n")
    assert pf.error(8081) is None


def test_port_forward_to_a_slow_client_is_flow_controlled(cluster):
    # the pod writes 48 MB at once; the client reads nothing for 3 s, then everything: the
    # server+agent process (embedded) must hold about a window, not the backlog
    want = cluster.kubectl("exec", "bulk", "--", "sha256sum", "/www/bulk.bin").stdout.split()[0]
    proc, local = port_forward(cluster, "pod/bulk", 8082)
    try:
        with sampling_rss({"server": cluster.proc.pid}) as peak, \
                socket.create_connection(("127.0.0.1", local), timeout=30) as sock:
            before = dict(peak)
            sock.sendall(b"GET /bulk.bin HTTP/1.0\r\n\r\n")
            time.sleep(3)  # a client that does not read
            digest, got, head = hashlib.sha256(), 0, b""
            while chunk := sock.recv(1 << 20):
                if len(head) < 4096:
                    head += chunk
                    if b"\r\n\r\n" in head:
                        body = head[head.index(b"\r\n\r\n") + 4:]
                        head = b"x" * 4096
                        digest.update(body)
                        got += len(body)
                    continue
                digest.update(chunk)
                got += len(chunk)
    finally:
        stop_proc(proc)
    growth_mib = (peak["server"] - before["server"]) / 1024
    print(f"server+agent RSS growth: {growth_mib:.1f} MiB for {got} bytes")
    assert got == 48_000_000 and digest.hexdigest() == want
    assert growth_mib < 24, f"RSS grew {growth_mib:.1f} MiB while the client did not read"


def test_port_forward_to_a_closed_port_reports_the_error(cluster):
    proc, local = port_forward(cluster, "pod/web", 9999)
    try:
        with pytest.raises(OSError):
            fetch(f"http://127.0.0.1:{local}/")
    finally:
        _, err = stop_proc(proc)
    assert "9999" in err and "connection refused" in err.lower(), err


SPDY = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}


@pytest.mark.parametrize("env", [SPDY, {}], ids=["spdy", "websocket"])
def test_exec(cluster, env):
    out = subprocess.run([KUBECTL, "--kubeconfig", str(cluster.kubeconfig), "exec", "web", "--",
                          "sh", "-c", "echo out; echo err >&2; exit 3"],
                         capture_output=True, text=True, env={**os.environ, **env}, timeout=30)
    assert out.returncode == 3, out.stderr
    assert out.stdout == "out\n"
    assert "err\n" in out.stderr
    out = subprocess.run([KUBECTL, "--kubeconfig", str(cluster.kubeconfig), "exec", "-i", "web",
                          "--", "sh", "-c", "cat; echo end"], input="line1\nline2\n",
                         capture_output=True, text=True, env={**os.environ, **env}, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "line1\nline2\nend\n"
    if env:  # kubectl really took the SPDY path
        out = subprocess.run([KUBECTL, "--kubeconfig", str(cluster.kubeconfig), "-v=8", "exec",
                              "web", "--", "true"], capture_output=True, text=True,
                             env={**os.environ, **env}, timeout=30)
        assert "Upgrade: SPDY/3.1" in out.stderr


@pytest.mark.parametrize("env", [SPDY, {}], ids=["spdy", "websocket"])
def test_attach(cluster, env):
    for _ in range(2):  # attach, detach, attach again
        proc = kubectl_popen(cluster, "attach", "ticker", env=env)
        try:
            read_until(proc, "tick-")
        finally:
            stop_proc(proc)
    # stdin: podman (conmon) closes the container's stdin when an attach with stdin ends,
    # so each variant attaches to its own stdin pod
    name = "echo" if env else "echo2"
    proc = kubectl_popen(cluster, "attach", "-i", name, env=env, stdin=subprocess.PIPE)
    try:
        proc.stdin.write("hello\n")
        proc.stdin.flush()
        read_until(proc, "got:hello")
    finally:
        stop_proc(proc)
    # detaching left both containers running
    assert running_unrestarted(cluster, "ticker")
    assert running_unrestarted(cluster, name)
    out = cluster.kubectl("exec", name, "--", "sh", "-c", "echo alive")
    assert out.stdout == "alive\n"


def test_attach_tty(cluster):
    # kubectl attach -it under `script` (a terminal): keystrokes reach the container's shell
    cmd = f"{KUBECTL} --kubeconfig {cluster.kubeconfig} attach -it shell"
    proc = subprocess.Popen(["script", "-qec", cmd, "/dev/null"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)  # let kubectl set its terminal up before typing
        proc.stdin.write("echo attached-$((40+2))\n")
        proc.stdin.flush()
        read_until(proc, "attached-42")
    finally:
        stop_proc(proc)
    assert running_unrestarted(cluster, "shell")


@pytest.mark.parametrize("env", [SPDY, {}], ids=["spdy", "websocket"])
def test_cp_both_ways(cluster, tmp_path, env):
    # kubectl cp is tar over exec with stdin: its end is the v5 close signal (websocket) or
    # the stdin stream's FIN (SPDY)
    src = tmp_path / "in.txt"
    payload = "".join(f"line {i} {'x' * 50}\n" for i in range(2000))  # ~120 KB
    src.write_text(payload)
    kubectl_env(cluster, "cp", str(src), "web:/tmp/in.txt", env=env)
    out = kubectl_env(cluster, "exec", "web", "--", "md5sum", "/tmp/in.txt", env=env)
    assert out.split()[0] == hashlib.md5(payload.encode()).hexdigest()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("aaa\n")
    kubectl_env(cluster, "cp", str(tmp_path / "d"), "web:/tmp/d", env=env)
    assert kubectl_env(cluster, "exec", "web", "--", "cat", "/tmp/d/a.txt", env=env) == "aaa\n"
    dst = tmp_path / "out.txt"
    kubectl_env(cluster, "cp", "web:/tmp/in.txt", str(dst), env=env)
    assert dst.read_text() == payload
    kubectl_env(cluster, "cp", "web:/www/index.html", str(tmp_path / "index.html"), env=env)
    assert (tmp_path / "index.html").read_text() == "hello-web\n"


@pytest.mark.parametrize("env", [SPDY, {}], ids=["spdy", "websocket"])
def test_exec_tty_gets_the_terminal_size(cluster, env):
    # `script` gives kubectl a terminal (40x100); -t sends its size on the resize channel
    cmd = (f"stty rows 40 cols 100; {KUBECTL} --kubeconfig {cluster.kubeconfig} exec -it web "
           f"-- sh -c 'sleep 0.5; stty size; tty'")
    out = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "40 100" in out.stdout and "/dev/pts/" in out.stdout, out.stdout


@pytest.mark.parametrize("env", [SPDY, {}], ids=["spdy", "websocket"])
def test_exec_failures_and_unread_stdin(cluster, env):
    def kubectl_exec(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([KUBECTL, "--kubeconfig", str(cluster.kubeconfig), "exec", *args],
                              capture_output=True, text=True, input=input,
                              env={**os.environ, **env}, timeout=30)
    # a command the image lacks: the runtime's message and 127, none of podman's plumbing
    # (its attach socket reset, which podman's API writes into stderr)
    for _ in range(3):
        out = kubectl_exec("web", "--", "no-such-command")
        assert out.returncode == 127, out.stderr
        assert "executable file not found" in out.stderr and "unixpacket" not in out.stderr
    # stdin the command never reads: no hang, its exit code all the same. Its output is not
    # asserted: conmon (podman 4.3.1) resets its attach socket when stdin is left unread, and
    # podman then loses what was still queued there, `podman exec -i` as much as the API
    out = kubectl_exec("-i", "web", "--", "sh", "-c", "echo quick; exit 2", input="x" * 200000)
    assert out.returncode == 2, out.stderr
    assert out.stdout in ("quick\n", "") and "unixpacket" not in out.stderr


def test_exec_and_attach_to_a_container_not_running(cluster):
    # a crashed container waiting out its backoff: both are refused with a message, the
    # attach is not left hanging until the container runs again
    cluster.kubectl("apply", "-f", "-", input=json.dumps(_pod("crash", cluster.node, "exit 1")))
    try:
        wait_for(lambda: ((container_status(cluster, "crash").get("state") or {})
                          .get("waiting") or {}).get("reason") == "CrashLoopBackOff",
                 60, 0.3, "crash in CrashLoopBackOff")
        for args in (("exec", "crash", "--", "true"), ("attach", "crash")):
            out = cluster.kubectl(*args, check=False, timeout=30)
            assert out.returncode != 0 and "is not running" in out.stderr, (args, out.stderr)
    finally:
        cluster.kubectl("delete", "pod", "crash", "--wait=false")


def test_stream_errors_are_statuses(cluster):
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    api = client.CoreV1Api(cluster.client())
    ghost = _pod("ghost", "no-such-node", "true")
    cluster.kubectl("apply", "-f", "-", input=json.dumps(ghost))

    def status_of(call, *args, **kw) -> tuple[int, dict]:
        with pytest.raises(ApiException) as e:
            call(*args, **kw)
        return e.value.status, json.loads(e.value.body)
    cases = [
        (api.connect_post_namespaced_pod_exec, ("nope", "default"), {"command": ["true"]}, 404),
        (api.connect_post_namespaced_pod_exec, ("done", "default"), {"command": ["true"]}, 400),
        (api.connect_post_namespaced_pod_exec, ("web", "default"),
         {"command": ["true"], "container": "bad"}, 400),
        (api.connect_post_namespaced_pod_exec, ("ghost", "default"), {"command": ["true"]}, 503),
        (api.connect_post_namespaced_pod_attach, ("nope", "default"), {}, 404),
        (api.connect_post_namespaced_pod_attach, ("done", "default"), {}, 400),
        (api.connect_post_namespaced_pod_portforward, ("nope", "default"), {"ports": "80"}, 404),
        (api.connect_post_namespaced_pod_portforward, ("ghost", "default"), {"ports": "80"}, 503),
        # no upgrade asked for: a Status, not a hang
        (api.connect_post_namespaced_pod_portforward, ("web", "default"), {"ports": "80"}, 400),
        (api.connect_post_namespaced_pod_exec, ("web", "default"), {"command": ["true"]}, 400),
    ]
    for call, args, kw, code in cases:
        got, body = status_of(call, *args, **kw)
        assert (got, body["kind"], body["code"]) == (code, "Status", code), (call, args, body)
    # kubectl shows the server's message
    out = cluster.kubectl("exec", "done", "--", "true", check=False)
    assert out.returncode != 0 and "completed pod" in out.stderr
    cluster.kubectl("delete", "pod", "ghost", "--wait=false")


# ---------------------------------------------------------------- the official Python client

def _py_exec(cluster, command: list[str], **kw):
    from kubernetes import client
    from kubernetes.stream import stream
    api = client.CoreV1Api(cluster.client())
    return stream(api.connect_get_namespaced_pod_exec, "web", "default", command=command,
                  stdin=True, stdout=True, stderr=True, _preload_content=False, **kw)


def _read_stdout_until(resp, needle: str, timeout: float = 20.0) -> str:
    out, deadline = "", time.monotonic() + timeout
    while needle not in out:
        assert resp.is_open() and time.monotonic() < deadline, (needle, out)
        resp.update(timeout=1)
        out += resp.read_stdout()
    return out


def _wait_closed(resp, timeout: float = 20.0) -> None:
    resp.run_forever(timeout=timeout)
    assert not resp.is_open()


def test_python_client_exec_text_and_binary_stdin(cluster):
    # stream(..., stdin=True, _preload_content=False) writes a str as a text frame (the
    # channel as a character) and bytes as a binary frame: the shell gets both
    resp = _py_exec(cluster, ["sh"], tty=False)
    try:
        assert resp.subprotocol == "v5.channel.k8s.io"
        resp.write_stdin("echo hi\n")
        assert _read_stdout_until(resp, "hi\n") == "hi\n"
        resp.write_stdin(b"echo bin-$((40+2))\n")
        _read_stdout_until(resp, "bin-42\n")
        resp.write_stdin("echo to-err >&2\n")
        err, deadline = "", time.monotonic() + 20
        while "to-err" not in err and time.monotonic() < deadline:
            resp.update(timeout=1)
            err += resp.read_stderr()
        assert err == "to-err\n"
        resp.write_stdin("exit\n")  # `exit` ends the session, Success on channel 3
        _wait_closed(resp)
        assert resp.returncode == 0
    finally:
        resp.close()
    # a non-zero exit comes back as upstream's NonZeroExitCode Status
    resp = _py_exec(cluster, ["sh"], tty=False)
    try:
        resp.write_stdin("exit 7\n")
        _wait_closed(resp)
        status = json.loads(resp.peek_channel(3))
        assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]
        assert resp.returncode == 7
    finally:
        resp.close()


def test_python_client_exec_v5_close_ends_stdin(cluster):
    resp = _py_exec(cluster, ["sh", "-c", "cat; echo end"], tty=False)
    try:
        resp.write_stdin("line1\n")
        resp.write_stdin(b"line2\n")
        resp.close_channel(0)  # v5: stdin is over, cat sees EOF
        _wait_closed(resp)
        assert resp.read_stdout() == "line1\nline2\nend\n"
        assert resp.returncode == 0
    finally:
        resp.close()


def test_python_client_exec_tty_resize(cluster):
    resp = _py_exec(cluster, ["sh"], tty=True)
    try:
        resp.write_channel(4, json.dumps({"Height": 33, "Width": 77}))  # text, as the docs do
        resp.write_stdin("stty size\n")
        _read_stdout_until(resp, "33 77")
        resp.write_channel(4, json.dumps({"Height": 20, "Width": 90}).encode())  # binary
        resp.write_stdin("stty size; tty\n")
        out = _read_stdout_until(resp, "20 90")
        if "/dev/pts/" not in out:  # `tty`'s answer may come in the same chunk as stty's
            out += _read_stdout_until(resp, "/dev/pts/")
        resp.write_stdin("exit 3\n")
        _wait_closed(resp)
        assert resp.returncode == 3
    finally:
        resp.close()


@pytest.mark.parametrize("protocol", ["v4.base64.channel.k8s.io", "base64.channel.k8s.io"])
def test_exec_base64_protocols(cluster, protocol):
    # text frames both ways: the channel as an ASCII digit, the payload in base64; v4 ends
    # with the Status on channel 3, the older protocol with the failure's message only
    import base64
    from urllib.parse import urlencode

    from kubernetes.stream.ws_client import create_websocket
    from websocket import ABNF
    api_client = cluster.client()
    cfg = api_client.configuration
    query = urlencode([("command", "sh"), ("command", "-c"),
                       ("command", "read l; echo got:$l; echo oops >&2; exit 5"),
                       ("stdin", "true"), ("stdout", "true"), ("stderr", "true")])
    url = cfg.host.replace("https://", "wss://") + \
        f"/api/v1/namespaces/default/pods/web/exec?{query}"
    headers = {"sec-websocket-protocol": protocol}
    if cfg.api_key.get("authorization"):
        headers["authorization"] = cfg.api_key["authorization"]
    ws = create_websocket(cfg, url, headers)
    try:
        assert {k.lower(): v for k, v in ws.getheaders().items()}.get(
            "sec-websocket-protocol") == protocol
        ws.send("0" + base64.b64encode(b"hello\n").decode(), opcode=ABNF.OPCODE_TEXT)
        got: dict[int, bytes] = {}
        ws.settimeout(20)
        while True:
            opcode, data = ws.recv_data()
            if opcode == ABNF.OPCODE_CLOSE:
                break
            assert opcode == ABNF.OPCODE_TEXT
            text = data.decode()
            ch = ord(text[0]) - ord("0")
            got[ch] = got.get(ch, b"") + base64.b64decode(text[1:])
    finally:
        ws.close()
    assert got[1] == b"got:hello\n" and got[2] == b"oops\n"
    if protocol.startswith("v4."):
        status = json.loads(got[3])
        assert status["reason"] == "NonZeroExitCode", status
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "5"}]
    else:
        assert got[3].decode().startswith("command terminated with non-zero exit code")
