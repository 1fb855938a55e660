"""A node's state read from its own files and podman, with no server: the pods in meta.db
(read-only), their restart counts (<data-dir>/agent/pods/<uid>/state.json) and podman's pods.

`k3py agent pods` (cli/localstate.py) prints it; the status of each pod is computed with the
pod syncer's own functions (pods/status.py, pods/restarts.py) from podman's inspects now, and
the probe verdicts and waiting reasons the agent recorded last (the status it queued for the
server, else the one the server last sent down). Nothing here writes."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from dataclasses import dataclass, field

import apsw
import orjson

from k3py.agent.pods import restarts, status
from k3py.agent.pods.inspects import label_of
from k3py.agent.runtime.podman import LABEL_NODE, LABEL_UID, Podman
from k3py.api.duration import since
from k3py.api.kinds.printers_core import pod_status as printed_status
from k3py.tunnel.message import split_resource_key

__all__ = ["LocalState", "NoAgentState", "PodmanPod", "read_cache", "read_podman", "node_pods",
           "table"]

_PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


class NoAgentState(Exception):
    """The data dir holds no agent state (no meta.db, or not one an agent wrote)."""


@dataclass
class LocalState:
    """What meta.db holds: the desired pods, the newest status queued per pod, the outbox."""

    pods: list[dict] = field(default_factory=list)
    queued_status: dict[tuple[str, str], dict] = field(default_factory=dict)
    outbox: int = 0
    synced: bool = False


@dataclass(frozen=True)
class PodmanPod:
    """One podman pod of the node: its creation time and its containers' inspects."""

    created: str | None
    containers: list[dict]


def read_cache(data_dir: str) -> LocalState:
    """meta.db under `data_dir`/agent, opened read-only (the agent may be running)."""
    path = os.path.join(data_dir, "agent", "meta.db")
    if not os.path.isfile(path):
        raise NoAgentState(f"no agent state in {data_dir}: {path} does not exist; give the "
                           f"agent's --data-dir")
    try:
        db = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as e:
        raise NoAgentState(f"cannot open {path}: {e}") from None
    try:
        db.setbusytimeout(5000)
        state = LocalState()
        for body, in db.execute("SELECT body FROM objects WHERE kind='pods'"):
            state.pods.append(orjson.loads(body))
        for key, body in db.execute("SELECT key, body FROM outbox ORDER BY rowid"):
            state.outbox += 1
            content = orjson.loads(body).get("content")
            with contextlib.suppress(ValueError):
                kind, ns, name, sub = split_resource_key(key)
                if kind == "pods" and sub == "status" and isinstance(content, dict):
                    state.queued_status[(ns or "", name)] = content
        state.synced = db.execute("SELECT 1 FROM state WHERE key='synced'").fetchone() \
            is not None
    except apsw.SQLError as e:  # a file without the agent's tables
        raise NoAgentState(f"{path} is not an agent's cache: {e}") from None
    except apsw.Error as e:
        raise NoAgentState(f"cannot read {path}: {e}") from None
    finally:
        db.close()
    return state


async def read_podman(podman: Podman, node: str) -> dict[str, PodmanPod]:
    """The node's podman pods by pod uid (two podman calls: the pods, then one inspect of
    all their containers, infra included)."""
    listed = json.loads(await podman.run("pod", "ps", "--format", "json", "--filter",
                                         f"label={LABEL_NODE}={node}") or "[]") or []
    ids = [c["Id"] for p in listed for c in p.get("Containers") or [] if c.get("Id")]
    inspects = json.loads(await podman.run("container", "inspect", *ids) or "[]") if ids \
        else []
    by_pod: dict[str, list[dict]] = {}
    for c in inspects:
        by_pod.setdefault(c.get("Pod") or "", []).append(c)
    return {p["Labels"][LABEL_UID]: PodmanPod(p.get("Created"), by_pod.get(p.get("Id"), []))
            for p in listed if (p.get("Labels") or {}).get(LABEL_UID)}


def _recorded_plan(spec: dict, recorded: dict, live: list[dict], uid: str,
                   saved: dict[str, restarts.RestartState]) -> restarts.Plan | None:
    """The restart plan from podman now, with the waiting reasons the agent recorded for
    containers podman does not have (ErrImageNeverPull, ImagePullBackOff...)."""
    if live:
        pod = {"metadata": {"uid": uid}, "spec": spec}
        plan = restarts.plan(pod, live, saved, {})  # notes exits in `saved`, a copy
    else:
        plan = restarts.Plan([], {}, False, not spec.get("initContainers"), [], False, [])
    present = {label_of(c) for c in live} if live else set()
    for key in ("containerStatuses", "initContainerStatuses"):
        for cs in recorded.get(key) or []:
            waiting = (cs.get("state") or {}).get("waiting")
            if cs.get("name") not in present and waiting and waiting.get("reason") not in (
                    None, "ContainerCreating", "PodInitializing"):
                plan.waiting.setdefault(cs["name"], waiting)
    return plan if (live or plan.waiting) else None


def _probe_verdicts(spec: dict, recorded: dict) -> dict[str, tuple[bool, bool]]:
    """(started, ready) the agent recorded for each container that has probes."""
    probed = {c.get("name") for c in spec.get("containers") or []
              if any(c.get(k) for k in _PROBES)}
    return {cs["name"]: (bool(cs.get("started")), bool(cs.get("ready")))
            for cs in recorded.get("containerStatuses") or [] if cs.get("name") in probed}


def node_pods(state: LocalState, podman: dict[str, PodmanPod] | None, pods_dir: str,
              now: _dt.datetime | None = None) -> list[dict]:
    """One record per cached pod, sorted by namespace and name: the columns of `kubectl get
    pods -o wide` and the computed status. `podman` None: podman could not be read, so the
    status is the one recorded last (`source` says which)."""
    now = now or _dt.datetime.now(_dt.UTC)
    rows = []
    for pod in state.pods:
        md, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        key = (md.get("namespace") or "", md.get("name") or "")
        uid = md.get("uid") or ""
        queued = state.queued_status.get(key)
        if queued is not None and queued.get("uid") == uid:
            recorded, source = queued.get("status") or {}, "queued"
        else:
            recorded, source = pod.get("status") or {}, "cache"
        st = recorded
        if podman is not None:
            live = podman.get(uid)
            containers = live.containers if live else []
            saved = restarts.load_restarts(pods_dir, uid)
            by_name, pod_ips = status.pod_network(pod, containers, recorded.get("hostIP") or "")
            st = status.pod_status(
                pod, created=live.created if live else None, by_name=by_name, pod_ips=pod_ips,
                host_ip=recorded.get("hostIP") or "",
                plan=_recorded_plan(spec, recorded, containers, uid, saved),
                error=None, restarts=saved, probes=_probe_verdicts(spec, recorded))
            source = "podman"
        shown, restart_count, _, ready, total = printed_status(
            {"metadata": md, "spec": spec, "status": st})
        rows.append({"namespace": key[0], "name": key[1], "uid": uid,
                     "ready": f"{ready}/{total}", "status": shown,
                     "restarts": restart_count, "age": since(md.get("creationTimestamp"), now),
                     "ip": st.get("podIP") or "", "phase": st.get("phase") or "",
                     "source": source, "podStatus": st})
    return sorted(rows, key=lambda r: (r["namespace"], r["name"]))


def table(rows: list[dict]) -> str:
    """kubectl's `get pods -A -o wide` layout for the first columns."""
    head = ("NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP")
    lines = [head] + [(r["namespace"], r["name"], r["ready"], r["status"], str(r["restarts"]),
                       r["age"], r["ip"] or "<none>") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)
