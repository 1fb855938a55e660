"""A pod's status as the kubelet reports it (phase, conditions, IPs, container and init
container statuses), computed with no I/O from podman's inspects and what the syncer knows.

The pod syncer (syncer.py) calls `pod_network` then `pod_status` with the pod's restart plan
(restarts.py), its restart counts and its probes' verdicts; the result goes up unchanged."""

from __future__ import annotations

from k3py.agent.lifecycle import qos_class
from k3py.agent.pods.inspects import container_state, k8s_time, label_of
from k3py.agent.pods.restarts import Plan, RestartState
from k3py.agent.runtime.podman import ip_address, ipv6_address

__all__ = ["phase_of", "pod_network", "pod_status"]


def phase_of(restart_policy: str, states: list[dict]) -> str:
    """The phase from the app containers' states (all of them exist)."""
    if not states:
        return "Pending"
    if any("running" in s for s in states):
        return "Running"
    if all("terminated" in s for s in states):
        codes = [s["terminated"]["exitCode"] for s in states]
        if restart_policy == "Never" or (restart_policy == "OnFailure"
                                         and all(c == 0 for c in codes)):
            return "Succeeded" if all(c == 0 for c in codes) else "Failed"
        return "Running"  # the agent restarts them
    return "Pending"


def pod_network(pod: dict, containers: list[dict], host_ip: str
                ) -> tuple[dict[str, dict], list[str]]:
    """(the inspects by the pod spec's container name, the pod IPs: IPv4 first, then IPv6 on
    a dual-stack network): the infra container holds them when it is among `containers`,
    else the first container that has one."""
    by_name: dict[str, dict] = {}
    pod_ips: list[str] = []
    for c in sorted(containers, key=lambda c: not c.get("IsInfra")):  # infra first
        cname = label_of(c)
        if cname:
            by_name[cname] = c
        if c.get("IsInfra") or (not pod_ips and cname):
            settings = c.get("NetworkSettings") or {}
            ips = [ip for ip in (ip_address(settings), ipv6_address(settings)) if ip]
            pod_ips = pod_ips or ips
    if (pod.get("spec") or {}).get("hostNetwork"):
        pod_ips = [host_ip] if host_ip else []
    return by_name, pod_ips


def pod_status(pod: dict, *, created: str | None, by_name: dict[str, dict], pod_ips: list[str],
               host_ip: str, plan: Plan | None, error: tuple[str, str] | None,
               restarts: dict[str, RestartState],
               probes: dict[str, tuple[bool, bool]]) -> dict:
    """The pod's status. `created`: its podman pod's creation time; `by_name`, `pod_ips`: from
    pod_network; `plan`: None when no container exists yet; `error`: why the podman pod
    could not be made; `probes`: container name -> (started, ready) of those with probes."""
    spec = pod.get("spec") or {}
    if plan is not None:
        waiting, failed, initialized = plan.waiting, plan.failed, plan.initialized
    else:
        waiting, failed, initialized = {}, False, not spec.get("initContainers")

    def one(spec_c: dict, init: bool) -> tuple[dict, dict | None]:
        name = spec_c["name"]
        c = by_name.get(name)
        entry = restarts.get(name) or RestartState()
        last = entry.last or None
        ready = started = False
        image_id = cid = ""
        actual = None
        if c is None:
            if name in waiting:
                state = {"waiting": waiting[name]}
            elif error:
                state = {"waiting": {"reason": error[0], "message": error[1]}}
            elif not init and not initialized:
                state = {"waiting": {"reason": "PodInitializing"}}
            else:
                state = {"waiting": {"reason": "ContainerCreating"}}
        else:
            state, running = container_state(c)
            actual = state
            image_id, cid = c.get("Image") or "", f"podman://{c.get('Id')}"
            if name in waiting:
                last, state = state.get("terminated"), {"waiting": waiting[name]}
            verdict = probes.get(name)
            started = running and (verdict is None or verdict[0])
            ready = started and (verdict is None or verdict[1])
            if init:
                ready = "terminated" in state and state["terminated"]["exitCode"] == 0
                started = running
        return {"name": name, "state": state, "ready": ready,
                "restartCount": int(entry.restarts or 0),
                "image": spec_c.get("image"), "imageID": image_id, "containerID": cid,
                "started": started,
                "lastState": {"terminated": last} if last else {}}, actual

    statuses, states = [], []
    for spec_c in spec.get("containers") or []:
        st, actual = one(spec_c, False)
        statuses.append(st)
        if actual is not None:
            states.append(actual)
    init_statuses = [one(ic, True)[0] for ic in spec.get("initContainers") or []]
    if failed:
        phase = "Failed"
    elif not initialized or len(states) < len(statuses):
        phase = "Pending"
    else:
        phase = phase_of(spec.get("restartPolicy") or "Always", states)
    all_ready = bool(statuses) and all(s["ready"] for s in statuses)
    cond = "True" if all_ready else "False"
    status = {"phase": phase, "hostIP": host_ip, "podIP": pod_ips[0] if pod_ips else None,
              "podIPs": [{"ip": ip} for ip in pod_ips],
              "startTime": k8s_time(created), "containerStatuses": statuses,
              "qosClass": qos_class(pod),
              "conditions": [
                  {"type": "PodScheduled", "status": "True"},
                  {"type": "Initialized", "status": "True" if initialized else "False"},
                  {"type": "ContainersReady", "status": cond},
                  {"type": "Ready", "status": cond}]}
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    return {k: v for k, v in status.items() if v is not None}
