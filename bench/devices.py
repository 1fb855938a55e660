"""Device benchmark: one agent, N devices (default 200) each publishing `twin/update` at 1 Hz on
the agent's MQTT broker; publish -> Device status latency (seen by a watch), desired value
(PATCH, then kubectl patch) -> `twin/update/document` latency, Device status writes per second
next to their limit (devices / reportCycle), the agent's RSS and CPU under that load, and the
embedded amqtt broker next to Debian's mosquitto with the same publish load, in the same run.

Run: python3 bench/devices.py [--devices 200] [--seconds 30]. Needs kubectl, paho-mqtt,
mosquitto and mosquitto-clients (scripts/setup.sh). Prints `name: value unit` lines and
`ratio: x` lines; exits 1 with a one-line reason when a figure cannot be measured. Traffic goes
only to 127.0.0.1; every loop is bounded in count and time; the server, the agent, mosquitto and
every MQTT client this run started are stopped, even on failure."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.api import client_ssl, emit, pct, rss_mb  # noqa: E402
from bench.pods import Unmeasurable, cpu_ticks, guarded_run  # noqa: E402
from tests.harness import KUBECTL, ServerProcess, clean_env, free_port, wait_for  # noqa: E402

NS = "default"
APP = "k3py-bench-devices"
MODEL = "bench-sensor"
GROUP_URL = "/apis/devices.kubeedge.io/v1beta1"
TWIN = "$hw/events/device/"
REPORT_CYCLE = 1.0           # the default reportCycle: the Devices do not set one
WARMUP = 5.0                 # seconds of load before the measured window
SETTLE_TIMEOUT = 30.0        # for the last readings to show after the load stops
DOC_TIMEOUT = 5.0            # per desired value
BROKER_TIMEOUT = 60.0        # per broker run


def device_name(i: int) -> str:
    return f"bench-dev-{i}"


def manifests(n: int, node: str) -> str:
    """One DeviceModel and n v1beta1 Devices bound to `node`, as one multi-document file."""
    docs = [{"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceModel",
             "metadata": {"name": MODEL, "namespace": NS},
             "spec": {"properties": [{"name": "seq", "type": "INT", "accessMode": "ReadOnly"},
                                     {"name": "setpoint", "type": "STRING",
                                      "accessMode": "ReadWrite"}]}}]
    for i in range(n):
        docs.append({"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
                     "metadata": {"name": device_name(i), "namespace": NS,
                                  "labels": {"app": APP}},
                     "spec": {"deviceModelRef": {"name": MODEL}, "nodeName": node,
                              "properties": [{"name": "setpoint",
                                              "desired": {"value": "p0"}}]}})
    return "\n---\n".join(json.dumps(d) for d in docs)


def update_topic(i: int) -> str:
    """Both id forms on the wire: even devices legacy `{name}`, odd ones `{namespace}/{name}`."""
    return f"{TWIN}{device_name(i)}/twin/update" if i % 2 == 0 else \
        f"{TWIN}{NS}/{device_name(i)}/twin/update"


def reading(i: int, seq: int, setpoint: str) -> bytes:
    return orjson.dumps({"event_id": f"b{i}-{seq}", "timestamp": int(time.time() * 1000),
                         "twin": {"seq": {"actual": {"value": str(seq)},
                                          "metadata": {"type": "int"}},
                                  "setpoint": {"actual": {"value": setpoint}}}})


def mqtt_client(port: int, client_id: str, on_message=None) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    c.max_queued_messages_set(0)
    c.max_inflight_messages_set(100)
    if on_message is not None:
        c.on_message = on_message
    c.connect("127.0.0.1", port, keepalive=60)
    c.loop_start()
    wait_for(c.is_connected, 10, 0.02, f"MQTT client {client_id} connected")
    return c


def stop_client(c: mqtt.Client) -> None:
    with contextlib.suppress(Exception):
        c.disconnect()
    with contextlib.suppress(Exception):
        c.loop_stop()


# -- the mappers: N devices at `rate` Hz over a few connections -------------------------------

class Mappers:
    """Publishes seq=1,2,... for every device at `rate` Hz, spread evenly over each period;
    `sent[i]` holds (seq, perf_counter at publish). `setpoint[i]` is echoed as the actual
    value of the `setpoint` twin, as a mapper applying desired values does."""

    def __init__(self, port: int, n: int, per_conn: int, rate: float, clients: list) -> None:
        self.n = n
        self.rate = rate
        self.clients = clients
        for k in range((n + per_conn - 1) // per_conn):
            clients.append(mqtt_client(port, f"bench-mapper-{k}"))
        self.per_conn = per_conn
        self.sent: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        self.setpoint = ["p0"] * n
        self.seq = [0] * n
        self.late = 0          # publishes more than one period behind their schedule
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="mappers")

    def publish(self, i: int, seq: int) -> None:
        self.seq[i] = seq
        self.sent[i].append((seq, time.perf_counter()))
        self.clients[i // self.per_conn].publish(update_topic(i),
                                                 reading(i, seq, self.setpoint[i]), qos=1)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        period = 1.0 / self.rate
        t0 = time.perf_counter() + 0.05
        due = [(t0 + i * period / self.n, i) for i in range(self.n)]
        heapq.heapify(due)
        while not self._stop.is_set():
            at, i = due[0]
            wait = at - time.perf_counter()
            if wait > 0:
                self._stop.wait(min(wait, 0.05))
                continue
            if -wait > period:
                self.late += 1
            self.publish(i, self.seq[i] + 1)
            heapq.heapreplace(due, (at + period, i))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)


# -- the Device watch -------------------------------------------------------------------------

class DeviceWatch:
    """One watch on the bench Devices: per device the newest `seq` shown, and the time of
    every MODIFIED event (status writes)."""

    def __init__(self, session, base: str, n: int) -> None:
        self.s = session
        self.url = f"{base}{GROUP_URL}/namespaces/{NS}/devices"
        self.shown = [-1] * n
        self.first_shown: list[dict[int, float]] = [{} for _ in range(n)]
        self.index = {device_name(i): i for i in range(n)}
        self.modified: list[float] = []
        self.task: asyncio.Task | None = None
        self.ready = asyncio.Event()
        self.error: str = ""

    async def run(self) -> None:
        import aiohttp
        rv = ""
        for _ in range(20):  # reconnects are bounded; each one resumes at the last version
            params = {"watch": "true", "labelSelector": f"app={APP}", "timeoutSeconds": "900"}
            if rv:
                params["resourceVersion"] = rv
            try:
                async with self.s.get(self.url, params=params,
                                      timeout=aiohttp.ClientTimeout(total=None)) as r:
                    if r.status != 200:
                        self.error = f"device watch -> HTTP {r.status}"
                        return
                    self.ready.set()
                    async for line in r.content:
                        now = time.perf_counter()
                        if line.strip():
                            rv = self._event(orjson.loads(line), now) or rv
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                await asyncio.sleep(0.1)
        self.error = "device watch: too many reconnects"

    def _event(self, ev: dict, now: float) -> str:
        obj = ev.get("object") or {}
        md = obj.get("metadata") or {}
        i = self.index.get(md.get("name", ""))
        if i is None or ev.get("type") not in ("ADDED", "MODIFIED"):
            return md.get("resourceVersion", "")
        if ev["type"] == "MODIFIED":
            self.modified.append(now)
        for twin in (obj.get("status") or {}).get("twins") or []:
            if twin.get("propertyName") == "seq":
                try:
                    seq = int((twin.get("reported") or {}).get("value"))
                except (TypeError, ValueError):
                    continue
                if seq > self.shown[i]:
                    self.shown[i] = seq
                    self.first_shown[i][seq] = now
        return md.get("resourceVersion", "")

    async def start(self) -> None:
        self.task = asyncio.create_task(self.run())
        try:
            await asyncio.wait_for(self.ready.wait(), 30)
        except TimeoutError:
            raise Unmeasurable(self.error or "device watch did not start in 30 s") from None

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


def status_latencies(mappers: Mappers, watch: DeviceWatch, t_from: float,
                     t_to: float) -> tuple[list[float], int]:
    """ms from each reading published in [t_from, t_to) to the first watch event showing it
    or a newer one; and how many such readings never showed."""
    out: list[float] = []
    missing = 0
    for i, sent in enumerate(mappers.sent):
        shown = sorted(watch.first_shown[i].items())  # (seq, time), seq ascending
        k = 0
        for seq, t in sent:
            while k < len(shown) and shown[k][0] < seq:
                k += 1
            if not t_from <= t < t_to:
                continue
            if k == len(shown):
                missing += 1
            else:
                out.append((shown[k][1] - t) * 1000)
    return out, missing


async def list_rv(s, base: str) -> int | None:
    async with s.get(f"{base}{GROUP_URL}/namespaces/{NS}/devices", params={"limit": "1"}) as r:
        body = await r.read()
    try:
        return int(orjson.loads(body)["metadata"]["resourceVersion"])
    except (KeyError, ValueError, TypeError):
        return None


# -- desired values: PATCH / kubectl patch -> twin/update/document ------------------------------

class Documents:
    """A subscriber on the patched devices' document topics; the time each setpoint value
    was first seen as the desired (expected) value."""

    def __init__(self, port: int, devices: list[int], clients: list, mappers: Mappers) -> None:
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self.mappers = mappers
        self.subscribed = threading.Event()
        self.client = mqtt_client(port, "bench-documents", self._message)
        clients.append(self.client)
        topics = [(f"{TWIN}{NS}/{device_name(i)}/twin/update/document", 0) for i in devices]
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.subscribe(topics)
        if not self.subscribed.wait(10):
            raise Unmeasurable("document subscriber: no SUBACK in 10 s")

    def _message(self, _c, _u, msg) -> None:
        now = time.perf_counter()
        try:
            body = orjson.loads(msg.payload)
            cur = body["twin"]["setpoint"]["current"]
            value = cur["expected"]["value"]
        except (KeyError, TypeError, ValueError):
            return  # a reading's document: setpoint unchanged
        name = msg.topic[len(TWIN) + len(NS) + 1:].split("/", 1)[0]
        with self.cond:
            if value not in self.seen:
                self.seen[value] = now
                with contextlib.suppress(ValueError):
                    self.mappers.setpoint[int(name.rsplit("-", 1)[1])] = value
                self.cond.notify_all()

    def wait(self, value: str, timeout: float) -> float | None:
        with self.cond:
            self.cond.wait_for(lambda: value in self.seen, timeout)
            return self.seen.get(value)


def patch_body(value: str) -> bytes:
    return orjson.dumps([{"op": "replace", "path": "/spec/properties/0/desired/value",
                          "value": value}])


async def desired_phase(s, srv: ServerProcess, docs: Documents, targets: list[int],
                        patches: int, kubectl_patches: int) -> dict:
    res: dict = {"api": [], "kubectl": [], "missing": 0}
    stop_at = time.perf_counter() + 120
    for k in range(patches + kubectl_patches):
        if time.perf_counter() > stop_at:
            break
        i = targets[k % len(targets)]
        value = f"p{k + 1}"
        t0 = time.perf_counter()
        if k < patches:
            async with s.patch(f"{srv.url}{GROUP_URL}/namespaces/{NS}/devices/{device_name(i)}",
                               data=patch_body(value),
                               headers={"Content-Type": "application/json-patch+json"}) as r:
                body = await r.read()
                if r.status != 200:
                    raise Unmeasurable(f"PATCH {device_name(i)} -> HTTP {r.status}: "
                                       f"{body[:200]!r}")
            kind = "api"
        else:
            out = await asyncio.to_thread(
                srv.kubectl, "patch", "device", device_name(i), "--type=json", "-p",
                patch_body(value).decode(), check=False, timeout=30)
            if out.returncode != 0:
                raise Unmeasurable(f"kubectl patch {device_name(i)} failed: "
                                   f"{out.stderr.strip()[-200:]}")
            kind = "kubectl"
        seen = await asyncio.to_thread(docs.wait, value, DOC_TIMEOUT)
        if seen is None:
            res["missing"] += 1
        else:
            res[kind].append((seen - t0) * 1000)
        await asyncio.sleep(0.1)
    return res


# -- the device phase -------------------------------------------------------------------------

async def wait_twins_know(port: int, n: int, clients: list) -> None:
    """Publish seq 0 for every device until none is answered 404 (the twin knows them all)."""
    ok: set[int] = set()
    answered = threading.Event()

    def on_message(_c, _u, msg) -> None:
        body = orjson.loads(msg.payload)
        if body.get("code") is None:
            with contextlib.suppress(ValueError, IndexError):
                ok.add(int(str(body.get("event_id", "")).split("-")[0][1:]))
        answered.set()
    c = mqtt_client(port, "bench-warmup", on_message)
    clients.append(c)
    got = threading.Event()
    c.on_subscribe = lambda *_: got.set()
    c.subscribe([(f"{TWIN}+/twin/update/result", 1), (f"{TWIN}+/+/twin/update/result", 1)])
    if not got.wait(10):
        raise Unmeasurable("warm-up subscriber: no SUBACK in 10 s")
    deadline = time.perf_counter() + 120
    while len(ok) < n:
        if time.perf_counter() > deadline:
            raise Unmeasurable(f"only {len(ok)} of {n} devices reached the agent's twin "
                               f"in 120 s")
        for i in range(n):
            if i not in ok:
                c.publish(update_topic(i), reading(i, 0, "p0"), qos=1)
        await asyncio.sleep(1.0)
    stop_client(c)
    clients.remove(c)


async def device_phase(args: argparse.Namespace, srv: ServerProcess, tmp: Path, port: int,
                       agent: subprocess.Popen, clients: list, res: dict) -> None:
    import aiohttp
    n = args.devices
    ctx = client_ssl(srv.kubeconfig, tmp)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        watch = DeviceWatch(s, srv.url, n)
        await watch.start()
        mappers = None
        try:
            t0 = time.perf_counter()
            out = await asyncio.to_thread(srv.kubectl, "apply", "-f", "-", check=False,
                                          input=manifests(n, args.node_name), timeout=120)
            if out.returncode != 0:
                raise Unmeasurable(f"kubectl apply of {n} Devices failed: "
                                   f"{out.stderr.strip()[-200:]}")
            emit("kubectl_apply_devices", time.perf_counter() - t0, "s")
            await wait_twins_know(port, n, clients)
            emit("apply_to_all_devices_on_the_twin", time.perf_counter() - t0, "s")
            deadline = time.perf_counter() + SETTLE_TIMEOUT
            while min(watch.shown) < 0:
                if watch.error or time.perf_counter() > deadline:
                    raise Unmeasurable(watch.error or f"{watch.shown.count(-1)} of {n} Devices "
                                       f"never showed a reported value")
                await asyncio.sleep(0.1)

            mappers = Mappers(port, n, args.per_connection, args.rate, clients)
            print(f"mapper_connections: {len(mappers.clients)}", flush=True)
            mappers.start()
            await asyncio.sleep(WARMUP)
            hz = os.sysconf("SC_CLK_TCK")
            a0, s0 = cpu_ticks(agent.pid)[0], cpu_ticks(srv.proc.pid)[0]
            rv0 = await list_rv(s, srv.url)
            w0 = time.perf_counter()
            rss: list[float] = []
            while time.perf_counter() < w0 + args.seconds:
                await asyncio.sleep(min(1.0, w0 + args.seconds - time.perf_counter()))
                if agent.poll() is not None:
                    raise Unmeasurable(f"agent exited with {agent.returncode} under load")
                rss.append(rss_mb(agent.pid))
            w1 = time.perf_counter()
            a1, s1 = cpu_ticks(agent.pid)[0], cpu_ticks(srv.proc.pid)[0]
            rv1 = await list_rv(s, srv.url)
            res["window"] = w1 - w0
            res["agent_cpu"] = (a1 - a0) / hz / (w1 - w0) * 100
            res["server_cpu"] = (s1 - s0) / hz / (w1 - w0) * 100
            res["rss_peak"], res["rss_end"] = max(rss), rss[-1]
            res["writes"] = sum(1 for t in watch.modified if w0 <= t < w1)
            res["rv_delta"] = rv1 - rv0 if rv0 is not None and rv1 is not None else None
            res["published"] = sum(1 for sent in mappers.sent for _, t in sent if w0 <= t < w1)
            res["late"] = mappers.late

            # desired values while the load goes on: patched devices spread over the set
            targets = sorted({(k * 37) % n for k in range(min(10, n))})
            docs = Documents(port, targets, clients, mappers)
            res["desired"] = await desired_phase(s, srv, docs, targets, args.patches,
                                                 args.kubectl_patches)
            mappers.stop()
            # the last readings: each device's newest must show
            deadline = time.perf_counter() + SETTLE_TIMEOUT
            while any(watch.shown[i] < mappers.seq[i] for i in range(n)):
                if time.perf_counter() > deadline:
                    break
                await asyncio.sleep(0.1)
            res["last_not_shown"] = sum(1 for i in range(n) if watch.shown[i] < mappers.seq[i])
            res["latency"], res["not_shown"] = status_latencies(mappers, watch, w0, w1)
        finally:
            if mappers is not None:
                mappers.stop()
            await watch.stop()


# -- amqtt vs mosquitto -------------------------------------------------------------------------

def start_mosquitto(tmp: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    conf = tmp / "mosquitto.conf"
    # queue limits raised so that neither broker drops what a fast publisher sends
    # (amqtt's queues are unbounded); nothing persisted, nothing logged
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 1000000\nlog_dest none\n")
    with open(tmp / "mosquitto.log", "ab") as log:
        proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                                 str(conf)], stdout=subprocess.DEVNULL, stderr=log,
                                start_new_session=True)
    import socket

    def listening() -> bool:
        if proc.poll() is not None:
            raise Unmeasurable(f"mosquitto exited with {proc.returncode}: "
                               f"{(tmp / 'mosquitto.log').read_text()[-200:]}")
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    wait_for(listening, 10, 0.05, "mosquitto listening")
    return proc, port


def broker_rate(port: int, qos: int, count: int, procs: list) -> tuple[float, int]:
    """Messages/s a mosquitto_sub receives while mosquitto_pub -l sends `count` readings as
    fast as it can on one topic (C clients: the broker is what is measured); and how many
    arrived."""
    topic = f"bench/load/{qos}"
    sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", str(qos),
                            "-t", topic], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    procs.append(sub)
    lines: queue.Queue[float | None] = queue.Queue()
    probed = threading.Event()

    def pump() -> None:
        assert sub.stdout is not None
        for line in sub.stdout:
            if line.startswith(b"probe"):
                probed.set()
            else:
                lines.put(time.perf_counter())
        lines.put(None)
    threading.Thread(target=pump, daemon=True).start()
    deadline = time.perf_counter() + 15
    while not probed.is_set():  # the subscription is in place once a probe comes back
        if time.perf_counter() > deadline or sub.poll() is not None:
            raise Unmeasurable(f"mosquitto_sub on port {port} saw no probe in 15 s")
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic,
                        "-m", "probe"], capture_output=True, timeout=10)
        probed.wait(0.2)
    payload = b"\n".join(reading(k % 200, k, "p0") for k in range(count)) + b"\n"
    t0 = time.perf_counter()
    pub = subprocess.Popen(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-q", str(qos),
                            "-t", topic, "-l"], stdin=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(pub)
    threading.Thread(target=lambda: pub.communicate(payload, timeout=BROKER_TIMEOUT),
                     daemon=True).start()
    got, last = 0, t0
    stop_at = t0 + BROKER_TIMEOUT
    while got < count:
        try:
            # 3 s without a message after the publisher is done: the rest is lost
            t = lines.get(timeout=max(0.01, min(3.0 if pub.poll() is not None else 1.0,
                                                stop_at - time.perf_counter())))
        except queue.Empty:
            if time.perf_counter() > stop_at or pub.poll() is not None:
                break
            continue
        if t is None:
            break
        got, last = got + 1, t
    for p in (pub, sub):
        if p.poll() is None:
            p.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
    return (got / (last - t0) if got else 0.0), got


# -- main -------------------------------------------------------------------------------------

def start_agent(srv: ServerProcess, tmp: Path, node: str, port: int,
                profile: str = "") -> subprocess.Popen:
    cmd = srv.agent_command(tmp / "agent", node, "--mqtt-port", str(port))
    if profile:  # the event loop's thread under cProfile, written when the agent stops
        cmd[1:1] = ["-m", "cProfile", "-o", str(Path(profile).resolve())]
    with open(tmp / "agent.log", "ab") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=clean_env(),
                                start_new_session=True)


def run(args: argparse.Namespace, tmp: Path, started: dict) -> None:
    for tool in (KUBECTL, "mosquitto", "mosquitto_sub", "mosquitto_pub"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise Unmeasurable(f"{tool} not found (sh scripts/setup.sh installs mosquitto, "
                               "mosquitto-clients and kubectl)")
    srv = started["server"] = ServerProcess(tmp / "server")
    srv.start(timeout=60)
    port = free_port()
    agent = started["agent"] = start_agent(srv, tmp, args.node_name, port, args.profile_agent)
    log = tmp / "agent.log"
    try:
        wait_for(lambda: agent.poll() is None and b"MQTT broker listening" in log.read_bytes(),
                 60, 0.1, "the agent's MQTT broker")
        wait_for(lambda: srv.kubectl("get", "devices", check=False).returncode == 0, 30, 0.2,
                 "devices served")
    except TimeoutError as e:
        raise Unmeasurable(f"{e} (agent {'exited' if agent.poll() is not None else 'runs'})") \
            from None
    print(f"devices: {args.devices}", flush=True)
    res: dict = {}
    clients: list = started["clients"]
    asyncio.run(device_phase(args, srv, tmp, port, agent, clients, res))
    for c in list(clients):
        stop_client(c)
        clients.remove(c)

    n, w = args.devices, res["window"]
    lat = res["latency"]
    emit("measured_window", w, "s")
    emit("readings_published", res["published"] / w, "msg/s")
    print(f"readings_scheduled: {n * args.rate:.2f} msg/s", flush=True)
    print(f"readings_published_late: {res['late']} readings", flush=True)
    emit("publish_to_status_p50", pct(lat, 50), "ms")
    emit("publish_to_status_p99", pct(lat, 99), "ms", "< 1500 ms")
    print(f"readings_never_shown: {res['not_shown']} readings   (superseded readings count "
          "as shown once a newer one shows)", flush=True)
    print(f"devices_last_reading_not_shown: {res['last_not_shown']} devices   (target 0)",
          flush=True)
    limit = n / REPORT_CYCLE
    writes = res["writes"] / w
    emit("device_status_writes", writes, "writes/s", f"<= {limit:.0f} writes/s")
    if res["rv_delta"] is not None:
        emit("store_writes_all_objects", res["rv_delta"] / w, "writes/s")
    print(f"ratio: {writes / limit:.2f}   (Device status writes/s / (devices / reportCycle), "
          "target <= 1)", flush=True)
    emit("agent_rss_peak", res["rss_peak"], "MB", "< 60 MB")
    emit("agent_rss_end", res["rss_end"], "MB")
    emit("agent_cpu", res["agent_cpu"], "% of one core")
    emit("server_cpu", res["server_cpu"], "% of one core")
    d = res["desired"]
    if not d["api"]:
        raise Unmeasurable(f"no desired value reached twin/update/document "
                           f"({d['missing']} missing)")
    emit("desired_patch_to_document_p50", pct(d["api"], 50), "ms")
    emit("desired_patch_to_document_p99", pct(d["api"], 99), "ms", "< 300 ms")
    if d["kubectl"]:
        emit("desired_kubectl_patch_to_document_p50", pct(d["kubectl"], 50), "ms")
        emit("desired_kubectl_patch_to_document_p99", pct(d["kubectl"], 99), "ms", "< 300 ms")
    print(f"desired_values_missing: {d['missing']} values   (target 0)", flush=True)

    mosq, mport = start_mosquitto(tmp)
    started["procs"].append(mosq)
    for qos in (0, 1):
        rates = {}
        for name, p in (("amqtt", port), ("mosquitto", mport)):
            rate, got = broker_rate(p, qos, args.broker_messages, started["procs"])
            rates[name] = rate
            emit(f"{name}_qos{qos}", rate, "msg/s")
            print(f"{name}_qos{qos}_received: {got} of {args.broker_messages} messages",
                  flush=True)
        print(f"ratio: {rates['amqtt'] / rates['mosquitto']:.3f}   (amqtt embedded in the agent "
              f"/ mosquitto, QoS {qos}, msg/s a subscriber receives)", flush=True)
    if agent.poll() is not None:
        raise Unmeasurable(f"agent exited with {agent.returncode}")


def teardown(started: dict) -> None:
    for c in started["clients"]:
        stop_client(c)
    for p in started["procs"]:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    agent = started.get("agent")
    if agent is not None and agent.poll() is None:
        agent.terminate()
        try:
            agent.wait(15)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
    if started.get("server"):
        started["server"].stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=200, help="devices on the agent (200)")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window (30)")
    ap.add_argument("--rate", type=float, default=1.0, help="readings per device per s (1)")
    ap.add_argument("--per-connection", type=int, default=20,
                    help="devices per mapper MQTT connection (20)")
    ap.add_argument("--patches", type=int, default=50, help="desired values by PATCH (50)")
    ap.add_argument("--kubectl-patches", type=int, default=10,
                    help="desired values by kubectl patch (10)")
    ap.add_argument("--broker-messages", type=int, default=20000,
                    help="messages per broker run, amqtt vs mosquitto (20000)")
    ap.add_argument("--node-name", default="bench-devices")
    ap.add_argument("--profile-agent", default="", metavar="FILE",
                    help="run the agent under cProfile, stats written to FILE at its exit "
                         "(figures then include the profiler's cost)")
    args = ap.parse_args()
    args.devices = max(1, min(args.devices, 2000))
    args.seconds = max(1.0, min(args.seconds, 600.0))
    args.rate = max(0.1, min(args.rate, 20.0))
    args.per_connection = max(1, min(args.per_connection, 1000))
    args.patches = max(1, min(args.patches, 500))
    args.kubectl_patches = max(0, min(args.kubectl_patches, 100))
    args.broker_messages = max(100, min(args.broker_messages, 200000))
    started: dict = {"clients": [], "procs": []}
    return guarded_run("k3py-bench-devices-", lambda tmp: run(args, tmp, started),
                       lambda tmp: teardown(started))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
