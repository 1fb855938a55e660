"""Two servers, one cluster, on a real PostgreSQL: B joins A with --server and A's token (its CAs
and keys come from the datastore's bootstrap data, no TLS dir copied), so A's kubeconfig works
through B; a wrong token is one line; the leader killed with -9 hands the controllers and the
scheduler to B (a Deployment scaled after the kill gets its pod), and the agent joined to A
moves its tunnel to B with its pod not restarted. Before that, streams (logs -f, exec -i,
port-forward) to the pod on A's tunnel go through B, relayed to A, `kubectl top` through B
shows the node A holds (the servers share their nodes' reports; their endpoint refuses an
admin), and a dashboard tab on B follows the node's live MQTT tail and a pod's log through A. After it, A started again shows the node now on B in `kubectl top` and in its
dashboard's MQTT figures and tunnel column (connected via B).

A listens on 127.0.0.1 and B on 127.0.0.2 with one port, as servers on two machines would: the
`kubernetes` Service's endpoints (what the agent fails over to) carry addresses, not ports."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import uuid

import paho.mqtt.publish as publish
import pytest
import yaml

from k3py.server.edge.peerreports import PEER_REPORTS_PATH
from k3py.server.edge.peertail import PEER_MQTT_TAIL_PATH
from tests.harness import KUBECTL, ServerProcess, free_port, wait_for
from tests.integration.agents import (
    IMAGE,
    build_test_image,
    fetch,
    followed_logs,
    kubectl_env,
    kubectl_popen,
    node_ready,
    port_forward,
    read_until,
    remove_podman_pods,
    running_unrestarted,
    stop_proc,
)
from tests.integration.test_dashboard import _login, _next, _session, run
from tests.integration.test_dashboard_mqtt import _token
from tests.integration.test_secrets_encryption import secrets_encrypt
from tests.integration.test_server_cli import k3py, one_line_error
from tests.pg import SKIP_REASON, PostgresCluster, pg_bindir

pytestmark = pytest.mark.skipif(pg_bindir() is None, reason=SKIP_REASON)

# short leases so that the takeover is quick (the defaults are upstream's 15 s / 10 s / 2 s)
ELECTION = ["--leader-elect-lease-duration", "3", "--leader-elect-renew-deadline", "2",
            "--leader-elect-retry-period", "0.5"]


class Cluster:
    def __init__(self, a: ServerProcess, b: ServerProcess, node: str,
                 agent: subprocess.Popen, agent_log, mqtt_port: int) -> None:
        self.a, self.b, self.node, self.agent, self.agent_log = a, b, node, agent, agent_log
        self.mqtt_port = mqtt_port  # the agent's embedded broker


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ha")
    build_test_image(tmp / "busybox.tar")
    pg = PostgresCluster(fsync=False).start()
    dsn = pg.create_db("ha")
    port = free_port()
    a = ServerProcess(tmp / "a", port=port, extra_args=[
        "--datastore-endpoint", dsn, "--advertise-address", "127.0.0.1", *ELECTION])
    b = ServerProcess(tmp / "b", port=port, host="127.0.0.2", extra_args=[
        "--datastore-endpoint", dsn, "--advertise-address", "127.0.0.2", *ELECTION])
    node = f"ha-{uuid.uuid4().hex[:6]}"
    agent = None
    try:
        a.start(timeout=60)
        b.extra_args += ["--server", a.url, "--token", a.join_token()]
        b.start(timeout=60)
        agent_log = open(tmp / "agent.log", "wb")
        mqtt_port = free_port()
        agent = subprocess.Popen(a.agent_command(tmp / "agent", node, "--metrics-resolution",
                                                 "2s", "--mqtt-port", str(mqtt_port)),
                                 stdout=agent_log, stderr=subprocess.STDOUT)
        wait_for(lambda: node_ready(b, node), 60, 0.3, f"node {node} Ready")
        yield Cluster(a, b, node, agent, tmp / "agent.log", mqtt_port)
    finally:
        if agent is not None:
            stop_proc(agent)
        for srv in (a, b):
            srv.stop()
        remove_podman_pods(node)
        pg.destroy()


def _ca_data(srv: ServerProcess) -> str:
    return yaml.safe_load(srv.kubeconfig.read_text())["clusters"][0]["cluster"][
        "certificate-authority-data"]


def test_joined_server_serves_the_same_ca_and_accepts_the_same_clients(cluster):
    a, b = cluster.a, cluster.b
    assert _ca_data(a) == _ca_data(b)
    assert a.join_token() == b.join_token()
    # A's kubeconfig (A's admin certificate, A's CA) through B: one PKI
    out = subprocess.run([KUBECTL, "--kubeconfig", str(a.kubeconfig), "--server", b.url,
                          "get", "configmap", "kube-root-ca.crt", "-n", "default", "-o",
                          "jsonpath={.data.ca\\.crt}"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == base64.b64decode(_ca_data(a)).decode().strip()
    # the kubernetes Service's endpoints name both servers (what agents fail over to)
    wait_for(lambda: b.kubectl_json("get", "endpoints", "kubernetes", "-n", "default")
             ["subsets"][0]["addresses"] == [{"ip": "127.0.0.1"}, {"ip": "127.0.0.2"}],
             20, 0.3, "both servers in the kubernetes endpoints")


def test_wrong_token_is_one_line(cluster, tmp_path):
    dsn = cluster.a.extra_args[cluster.a.extra_args.index("--datastore-endpoint") + 1]
    out = k3py("server", "--data-dir", str(tmp_path / "d"), "--https-listen-port",
               str(free_port()), "--bind-address", "127.0.0.1", "--write-kubeconfig",
               str(tmp_path / "kc"), "--disable-agent", "--datastore-endpoint", dsn,
               "--server", cluster.a.url, "--token", "not-the-token")
    line = one_line_error(out)
    assert "different token" in line and "--token" in line, line
    assert not (tmp_path / "kc").exists()


def test_rotated_keys_reach_the_other_server(cluster):
    """`secrets-encrypt rotate-keys` on A: B takes the new key file from the datastore without
    a restart (status on B shows one key, A's new writer, and every hash matching), and a
    secret written through either server reads back through the other."""
    a, b = cluster.a, cluster.b
    a.kubectl("create", "secret", "generic", "rot-a", "--from-literal=v=through-a")
    out = secrets_encrypt(a, "rotate-keys")
    assert out.returncode == 0, out.stderr
    writer = out.stdout.split("Current Writer Key: ")[1].split()[0]
    assert "Reencrypted: " in out.stdout and "Dropped: " in out.stdout, out.stdout

    def b_status() -> str:
        got = secrets_encrypt(b, "status")
        assert got.returncode == 0, got.stderr
        return got.stdout
    wait_for(lambda: f"Keys: {writer}\n" in b_status()
             and "Server Encryption Hashes: All hashes match" in b_status(), 20, 0.5,
             "B holding A's rotated key")
    key_file = "server/cred/encryption-config.json"
    assert (b.data_dir / key_file).read_bytes() == (a.data_dir / key_file).read_bytes()
    assert (b.data_dir / key_file).stat().st_mode & 0o777 == 0o600
    b.kubectl("create", "secret", "generic", "rot-b", "--from-literal=v=through-b")
    for srv, name, value in ((b, "rot-a", "through-a"), (a, "rot-b", "through-b")):
        got = srv.kubectl("get", "secret", name, "-o", "jsonpath={.data.v}").stdout
        assert base64.b64decode(got).decode() == value


def _holder(srv: ServerProcess, lease: str) -> str:
    return srv.kubectl_json("get", "lease", lease, "-n", "kube-system")["spec"].get(
        "holderIdentity", "")


def _server_id(srv: ServerProcess) -> str:
    return (srv.data_dir / "server" / "server-id").read_text().strip()


def _deployment(replicas: int) -> str:
    return yaml.safe_dump({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "Never",
                                     "command": ["sleep", "3600"]}]}}}})


def _running(srv: ServerProcess) -> list[str]:
    pods = srv.kubectl_json("get", "pods", "-l", "app=web")["items"]
    return sorted(p["metadata"]["name"] for p in pods
                  if p["status"].get("phase") == "Running")


def test_streams_through_the_server_without_the_tunnel(cluster):
    """The node's tunnel is on A; kubectl talks to B, which relays logs -f, exec with stdin and
    port-forward to A (authenticated by the cluster's CAs both ways)."""
    b = cluster.b
    script = ("mkdir -p /www && echo hello-relay > /www/index.html && "
              "httpd -p 8080 -h /www && i=0; while true; do i=$((i+1)); echo tick-$i; "
              "sleep 0.2; done")
    b.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "relay"},
        "spec": {"nodeName": cluster.node, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "Never",
                                 "command": ["sh", "-c", script]}]}}))
    wait_for(lambda: b.kubectl_json("get", "pod", "relay")["status"].get("phase") == "Running",
             60, 0.3, "pod relay Running")
    assert "tunnel connected to " + cluster.a.url in cluster.agent_log.read_text(
        errors="replace")
    logs = kubectl_popen(b, "logs", "-f", "relay")
    try:
        read_until(logs, "tick-5")
    finally:
        stop_proc(logs)
    data = "".join(f"line {i}\n" for i in range(20000))  # ~200 KB of stdin
    out = kubectl_env(b, "exec", "-i", "relay", "--", "md5sum", env={}, input=data)
    assert out.split()[0] == hashlib.md5(data.encode()).hexdigest()
    for websockets in ("true", "false"):
        pf, local = port_forward(b, "pod/relay", 8080,
                                 {"KUBECTL_PORT_FORWARD_WEBSOCKETS": websockets})
        try:
            assert fetch(f"http://127.0.0.1:{local}/") == "hello-relay\n"
        finally:
            stop_proc(pf)
    b.kubectl("delete", "pod", "relay", "--wait=false")
    # a node on no server: B asks A, which answers 503 without asking further; B's Status
    b.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ghost"},
        "spec": {"nodeName": "ghost-node", "containers": [{"name": "c", "image": IMAGE}]}}))
    for args in (("logs", "ghost"), ("exec", "ghost", "--", "true")):
        out = b.kubectl(*args, check=False)
        assert out.returncode != 0 and "node ghost-node is not connected" in out.stderr, \
            out.stderr
    b.kubectl("delete", "pod", "ghost", "--wait=false")


def test_dashboard_logs_of_a_pod_on_the_other_server(cluster):
    """The node's tunnel is on A; a tab on B follows a pod's log in the dashboard's "logs"
    feed, which B reads through A (PeerRelay.streamed_get); a pod on a node no server holds ends with
    its own 503 meanwhile; when the tab cancels, the node stops following the log."""
    b = cluster.b
    token = _token(b, "ha-logs-admin", "cluster-admin")
    for name, node in (("ha-logs", cluster.node), ("ha-logs-ghost", "ghost-node")):
        b.kubectl("apply", "-f", "-", input=yaml.safe_dump({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "containers": [{
                "name": "c", "image": IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", "while true; do echo ha-tick; sleep 0.3; done"]}]}}))
    wait_for(lambda: b.kubectl_json("get", "pod", "ha-logs")["status"].get("phase")
             == "Running", 60, 0.3, "pod ha-logs Running")

    def followed() -> int:
        return followed_logs("default_ha-logs_")

    async def follow() -> list[dict]:
        async with await _session() as http:
            headers = {**(await _login(http, b.url, token)), "Origin": b.url}
            async with http.ws_connect(b.url + "/dashboard/api/live", headers=headers) as ws:
                await ws.send_json({"op": "logs", "id": "l", "namespace": "default",
                                    "pods": ["ha-logs", "ha-logs-ghost"], "follow": True,
                                    "tailLines": 1})
                seen: list[dict] = []

                def both(m: dict) -> bool:
                    seen.append(m)
                    data = [s["data"] for s in seen if s["type"] == "feed"]
                    return m["type"] == "error" or (
                        any("ha-tick" in t for d in data for i, t in d.get("lines", [])
                            if i == 0)
                        and any(i == 1 for d in data for i, _ in d.get("ended", [])))
                await _until(ws, "l", both, "ha-logs' lines and the ghost's end through B")
                await asyncio.to_thread(wait_for, lambda: followed() == 1, 10, 0.2,
                                        "the node following the log for B")
                await ws.send_json({"op": "cancel", "id": "l"})
                await asyncio.to_thread(wait_for, lambda: followed() == 0, 10, 0.2,
                                        "the node's log stream closed once the tab cancelled")
                return seen
    seen = run(follow())
    assert all(m["type"] == "feed" for m in seen), seen
    ended = [e for m in seen for i, e in m["data"].get("ended", []) if i == 1]
    assert ended and "node ghost-node is not connected" in ended[0], ended
    b.kubectl("delete", "pod", "ha-logs", "ha-logs-ghost", "--wait=false")


def _top_node(srv: ServerProcess, node: str) -> list[str]:
    """The node's row of `kubectl top node` ([] while it has no metrics there)."""
    out = srv.kubectl("top", "node", node, "--no-headers", check=False)
    return out.stdout.split() if out.returncode == 0 else []


def test_usage_of_the_node_on_the_other_server(cluster):
    """The node's tunnel is on A, which shares its reports: B serves them as its own; the
    servers' endpoint for that refuses an admin (and anyone else but a server)."""
    row = wait_for(lambda: _top_node(cluster.b, cluster.node), 30, 0.5,
                   "the node's usage in kubectl top through B")
    assert row[0] == cluster.node and row[1].endswith("m") and row[3].endswith("Mi"), row
    for srv in (cluster.a, cluster.b):
        out = srv.kubectl("create", "--raw", PEER_REPORTS_PATH, "-f", "-", check=False,
                          input='{"server": "127.0.0.9", "reports": []}')
        assert out.returncode != 0 and "Forbidden" in out.stderr and \
            "only the cluster's servers" in out.stderr, out.stderr


async def _until(ws, sid: str, wanted, what: str, timeout: float = 15) -> dict:
    """The first message for `sid` that `wanted` accepts, within `timeout` seconds."""
    last = None
    try:
        async with asyncio.timeout(timeout):
            while not wanted(last := await _next(ws, sid)):
                pass
    except TimeoutError:
        raise AssertionError(f"{what} within {timeout:g} s (last: {last})") from None
    return last


def test_mqtt_tail_of_the_node_on_the_other_server(cluster):
    """The node's tunnel is on A; a tab on B follows the node's MQTT tail, which B opens
    through A (the servers' peer-only websocket): a message published on the node's broker
    shows with its payload, and when the tab cancels, A closes the node's tail (the node's
    count of its open tails, shared by A, back to 0). A node no server holds is the tab's
    503; the servers' endpoint refuses an admin."""
    a, b = cluster.a, cluster.b
    token = _token(b, "ha-tail-admin", "cluster-admin")
    marker = uuid.uuid4().hex
    topic = "$hw/events/device/default/ha-thermo/twin/update"
    payload = json.dumps({"event_id": marker, "timestamp": 0, "twin": {}})

    def tails(msg: dict) -> int | None:
        return msg["data"]["nodes"].get(cluster.node, {}).get("tails")

    async def publish_every(seconds: float) -> None:
        for _ in range(60):  # until cancelled, 18 s at most
            await asyncio.to_thread(publish.single, topic, payload, qos=1,
                                    hostname="127.0.0.1", port=cluster.mqtt_port)
            await asyncio.sleep(seconds)

    async def follow() -> tuple[dict, dict]:
        async with await _session() as http:
            headers = {**(await _login(http, b.url, token)), "Origin": b.url}
            async with http.ws_connect(b.url + "/dashboard/api/live", headers=headers) as ws:
                await ws.send_json({"op": "mqtttail", "id": "ghost", "node": "ghost-node"})
                ghost = await _next(ws, "ghost")
                await ws.send_json({"op": "mqtttail", "id": "t", "node": cluster.node})
                publisher = asyncio.create_task(publish_every(0.3))
                try:
                    seen = await _until(ws, "t", lambda m: m["type"] == "error" or any(
                        e["topic"] == topic and marker in e["payload"]
                        for e in m["data"]["messages"]), "the message in B's tail")
                finally:
                    publisher.cancel()
                await ws.send_json({"op": "mqtt", "id": "m"})
                await _until(ws, "m", lambda m: (tails(m) or 0) >= 1,
                             "the node's summary counting the tail open through A")
                await ws.send_json({"op": "cancel", "id": "t"})
                await _until(ws, "m", lambda m: tails(m) == 0,
                             "the node's tail closed once the tab cancelled it")
                return ghost, seen
    ghost, seen = run(follow())
    assert ghost["type"] == "error" and ghost["code"] == 503 and \
        "node ghost-node is not connected" in ghost["message"], ghost
    assert seen["type"] == "feed", seen
    entry = next(e for e in seen["data"]["messages"] if marker in e["payload"])
    assert entry["direction"] == "in" and entry["size"] == len(payload) and \
        not entry.get("hidden"), entry
    for srv in (a, b):
        out = srv.kubectl("get", "--raw", f"{PEER_MQTT_TAIL_PATH}?node={cluster.node}",
                          check=False)
        assert out.returncode != 0 and "Forbidden" in out.stderr and \
            "only the cluster's servers" in out.stderr, out.stderr


def test_leader_killed_controllers_go_on_and_the_agent_moves(cluster):
    a, b = cluster.a, cluster.b
    for lease in ("kube-controller-manager", "kube-scheduler"):
        assert _holder(b, lease).endswith(_server_id(a)), "A started first and leads"
    a.kubectl("apply", "-f", "-", input=_deployment(1))
    first = wait_for(lambda: _running(a), 60, 0.3, "the first pod Running")[0]

    a.kill9()
    for lease in ("kube-controller-manager", "kube-scheduler"):
        wait_for(lambda lease=lease: _holder(b, lease).endswith(_server_id(b)), 30, 0.3,
                 f"B holding the {lease} Lease")
    b.kubectl("scale", "deployment", "web", "--replicas=2")
    running = wait_for(lambda: len(_running(b)) == 2 and _running(b), 60, 0.3,
                       "two pods Running after the scale through B")
    assert first in running and running_unrestarted(b, first)
    log = cluster.agent_log.read_text(errors="replace")
    assert f"tunnel connected to {b.url}" in log, log[-2000:]
    assert node_ready(b, cluster.node)


def test_restarted_server_sees_the_node_on_the_other(cluster):
    """After the kill above the node's tunnel is on B. A started again is sent the newest
    reports of B's nodes as soon as B sees its Lease: kubectl top through A shows the node, and
    A's dashboard lists its MQTT summary (the agent sends one only when it changes, or every
    30 s) and its tunnel, connected via B. B warned at most once while A was down."""
    a, b = cluster.a, cluster.b
    a.start(timeout=60)
    row = wait_for(lambda: _top_node(a, cluster.node), 30, 0.5,
                   "the node's usage in kubectl top through the restarted A")
    assert row[0] == cluster.node, row
    token = _token(a, "ha-admin", "cluster-admin")

    async def live_figures() -> tuple[dict, dict]:
        async with await _session() as http:
            headers = {**(await _login(http, a.url, token)), "Origin": a.url}
            async with http.ws_connect(a.url + "/dashboard/api/live", headers=headers) as ws:
                await ws.send_json({"op": "mqtt", "id": "m"})
                msg = await _next(ws, "m")
                while cluster.node not in msg["data"]["nodes"]:  # bounded by run()'s deadline
                    msg = await _next(ws, "m")
                await ws.send_json({"op": "tunnels", "id": "t"})
                tunnels = (await _next(ws, "t"))["data"]
                while not tunnels.get(cluster.node, {}).get("connected"):
                    tunnels = (await _next(ws, "t"))["data"]
                return msg["data"]["nodes"][cluster.node], tunnels[cluster.node]
    summary, tunnel = run(live_figures())
    assert "topics" in summary and summary["timestamp"] > 0, summary
    assert tunnel["server"] == "127.0.0.2" and tunnel["connectedSince"] > 0, tunnel
    log = cluster.agent_log.read_text(errors="replace")
    assert log.rindex(f"tunnel connected to {b.url}") > log.rfind(f"tunnel connected to {a.url}")
    warnings = b.log_path.read_text(errors="replace").count(
        "sharing the nodes' reports with server 127.0.0.1:")
    assert warnings <= 1, warnings
