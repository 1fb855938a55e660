"""Reading the podman container inspects the runtime returns (runtime/libpod.py `inspect`): state,
times and the pod spec's container name; used by restarts.py, status.py and the syncer."""

from __future__ import annotations

from k3py.agent.logwindow import parse_ns
from k3py.agent.runtime.podman import LABEL_CONTAINER

__all__ = ["label_of", "exited", "running", "k8s_time", "unix_time", "epoch", "terminated",
           "container_state", "listing_signature", "inspect_signature"]


def label_of(c: dict) -> str | None:
    """The pod spec's name of the container behind an inspect (None: the infra container)."""
    return ((c.get("Config") or {}).get("Labels") or {}).get(LABEL_CONTAINER)


def _status(c: dict | None) -> str:
    return str(((c or {}).get("State") or {}).get("Status") or "").lower()


def exited(c: dict | None) -> bool:
    return c is not None and _status(c) in ("exited", "stopped")


def running(c: dict | None) -> bool:
    return c is not None and _status(c) == "running"


def k8s_time(value: object) -> str | None:
    """podman's 2024-01-01T10:00:00.123456789Z (or with an offset) as Kubernetes writes
    times: whole seconds and Z; None for podman's zero time."""
    if not value or str(value).startswith("0001"):
        return None
    s = str(value)
    return s[:19] + "Z" if len(s) >= 19 else s


def unix_time(value: object) -> float | None:
    """podman time (RFC 3339 with nanoseconds) -> unix time."""
    ns = parse_ns(str(value or ""))
    return None if ns is None else ns / 1e9


def epoch(value: object) -> int | None:
    """podman inspect time -> whole unix seconds, as podman's container listing gives them."""
    ns = parse_ns(str(value or ""))
    return None if ns is None else ns // 1_000_000_000


def terminated(c: dict) -> dict:
    """A container's ended run as a Kubernetes `terminated` state."""
    st = c.get("State") or {}
    code = st.get("ExitCode", 0) or 0
    reason = "OOMKilled" if st.get("OOMKilled") else ("Completed" if code == 0 else "Error")
    return {"exitCode": code, "reason": reason, "startedAt": k8s_time(st.get("StartedAt")),
            "finishedAt": k8s_time(st.get("FinishedAt")),
            "containerID": f"podman://{c.get('Id')}"}


def container_state(c: dict) -> tuple[dict, bool]:
    """(the Kubernetes container state, whether it runs) from the container's inspect."""
    status = _status(c)
    if status == "running":
        return {"running": {"startedAt": k8s_time((c.get("State") or {}).get("StartedAt"))}}, True
    if status in ("exited", "stopped"):
        return {"terminated": terminated(c)}, False
    return {"waiting": {"reason": "ContainerCreating"}}, False


def listing_signature(c: dict) -> tuple:
    """What the container listing tells of a container's state; a change means inspect it
    again."""
    return (str(c.get("State") or "").lower(), c.get("StartedAt"), c.get("ExitedAt"),
            c.get("ExitCode"))


def inspect_signature(c: dict) -> tuple:
    """listing_signature computed from an inspect of the container."""
    st = c.get("State") or {}
    return (str(st.get("Status") or "").lower(), epoch(st.get("StartedAt")),
            epoch(st.get("FinishedAt")), st.get("ExitCode"))
