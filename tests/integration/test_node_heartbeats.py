"""Node heartbeats as upstream's kubelet sends them since node leases (KEP-589), with a real
server and its embedded agent: the Lease is renewed every 10 s while an unchanged Node status is
not written again (every 5 minutes only), and a Node marked Ready=Unknown by the lifecycle
controller while the agent's tunnel stayed up is put back to Ready=True by the agent, asked by
the server at its next Lease, not 5 minutes later, with the Ready lastTransitionTime of its
return (the server's now, as upstream's kubelet posts it), not the agent's start. As upstream's
kubelet patches its status, a post keeps the conditions of other writers (a network plugin's,
node-problem-detector's), and an edit of the agent's own part is put back soon, not at its
next periodic post.

No timing is asserted: the waits are generous bounds (bench/scale.py measures the writes)."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from k3py.api.servicelb import PORTS_IN_USE_ANNOTATION
from tests.harness import wait_for
from tests.integration.agents import embedded_node

pytestmark = pytest.mark.integration

QUIET_SECONDS = 25.0  # two lease renewals at least, and no status report due


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    with embedded_node(tmp_path_factory.mktemp("heartbeats"), "hb", timeout=30) as s:
        yield s


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _renew_time(srv) -> dt.datetime:
    lease = srv.kubectl_json("get", "lease", "-n", "kube-node-lease", srv.node)
    return _time(lease["spec"]["renewTime"])


def _ready(node: dict) -> dict:
    return next((c for c in node["status"].get("conditions") or [] if c["type"] == "Ready"), {})


def _settled(srv) -> dict:
    """The Node once what its registration set off is done (each a write of the Node): a pod
    CIDR, no lifecycle taint, and the agent's first report of the LoadBalancer ports taken on
    it (made once its network is set up, which on a busy machine comes after Ready)."""
    def done() -> dict | None:
        node = srv.kubectl_json("get", "node", srv.node)
        taints = (node.get("spec") or {}).get("taints") or []
        annotations = node["metadata"].get("annotations") or {}
        if node["spec"].get("podCIDR") and _ready(node).get("status") == "True" and not any(
                t["key"].startswith("node.kubernetes.io/") for t in taints) and \
                PORTS_IN_USE_ANNOTATION in annotations:
            return node
        return None
    return wait_for(done, 60, 0.5, f"node {srv.node} Ready with a pod CIDR, no taint and its "
                    f"ports reported")


def _changes(old: dict, new: dict) -> list[str]:
    """What differs between two versions of an object, resourceVersion aside."""
    out = []
    for part in ("metadata", "spec", "status"):
        a, b = old.get(part) or {}, new.get(part) or {}
        out += [f"{part}.{k}: {json.dumps(a.get(k))} -> {json.dumps(b.get(k))}"
                for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k) and
                k not in ("resourceVersion", "managedFields")]
    return out


ASKED = b"asked for it"  # what the server logs when it asks the agent for its status


def _patch_conditions(srv, conditions: list[dict]) -> None:
    """Write the Node's conditions through the API's status subresource, as another writer."""
    srv.kubectl("patch", "node", srv.node, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": {"conditions": conditions}}))


def test_lease_renewed_while_an_unchanged_status_is_not_written(srv):
    node = _settled(srv)
    version = node["metadata"]["resourceVersion"]
    logged = srv.log_path.stat().st_size
    renewals = {_renew_time(srv)}
    until = time.monotonic() + QUIET_SECONDS
    while time.monotonic() < until:
        renewals.add(_renew_time(srv))
        time.sleep(1.0)
    now = srv.kubectl_json("get", "node", srv.node)
    assert len(renewals) >= 3, f"the Lease was renewed {len(renewals) - 1} times: {renewals}"
    assert now["metadata"]["resourceVersion"] == version, \
        f"the Node was written meanwhile: {_changes(node, now)}"
    # nor was the agent asked for it (its post of an unchanged status would not be a write)
    with open(srv.log_path, "rb") as f:
        f.seek(logged)
        asks = [line for line in f if ASKED in line]
    assert not asks, asks


def test_ready_again_after_the_controller_marked_it_unknown(srv):
    """As the node lifecycle controller's mark_unknown, through the API's status subresource;
    the agent's tunnel stays up, so no reconnect re-registers the node."""
    node = _settled(srv)
    conditions = [{**c, "status": "Unknown", "reason": "NodeStatusUnknown",
                   "message": "Kubelet stopped posting node status."}
                  for c in node["status"]["conditions"]]
    # the times stored are whole seconds (the server's and the agent's clock are one here)
    patched = dt.datetime.now(dt.UTC).replace(microsecond=0)
    assert _time(_ready(node)["lastTransitionTime"]) < patched  # the agent's start
    _patch_conditions(srv, conditions)
    assert _ready(srv.kubectl_json("get", "node", srv.node))["status"] == "Unknown"

    def ready_again() -> dict | None:
        now = srv.kubectl_json("get", "node", srv.node)
        return now if _ready(now).get("status") == "True" else None
    back = wait_for(ready_again, 90, 0.5, f"node {srv.node} Ready again")
    assert _time(_ready(back)["lastTransitionTime"]) >= patched, _ready(back)
    # the lifecycle controller's unreachable taint follows the posted condition away
    _settled(srv)


def _ready_again(srv, what: str) -> dict:
    def again() -> dict | None:
        now = srv.kubectl_json("get", "node", srv.node)
        return now if _ready(now).get("status") == "True" else None
    return wait_for(again, 90, 0.5, f"node {srv.node} Ready again {what}")


def test_a_foreign_condition_survives_the_agents_post(srv):
    """A condition of a type the agent does not post (node-problem-detector's, say) stays in
    its place when the agent posts, here asked to by a Node marked Unknown."""
    node = _settled(srv)
    foreign = {"type": "ExampleProblem", "status": "False", "reason": "NoProblem",
               "message": "set by a test as node-problem-detector would",
               "lastHeartbeatTime": node["metadata"]["creationTimestamp"],
               "lastTransitionTime": node["metadata"]["creationTimestamp"]}
    mine = [c for c in node["status"]["conditions"] if c["type"] != foreign["type"]]
    _patch_conditions(srv, [foreign] + [{**c, "status": "Unknown", "reason": "NodeStatusUnknown",
                                         "message": "Kubelet stopped posting node status."}
                                        for c in mine])
    back = _ready_again(srv, "after it was marked Unknown")
    conditions = back["status"]["conditions"]
    assert conditions[0] == foreign, conditions
    assert {c["type"]: c["status"] for c in conditions[1:]} == \
        {c["type"]: c["status"] for c in mine}, conditions


def test_an_edit_of_the_agents_condition_is_put_back(srv):
    """The Ready condition's message edited (its status stays True): the server sees the
    agent's part of the status changed at the node's next Lease and asks it to post, as
    upstream's kubelet patches back what differs from its own status every 10 s."""
    node = _settled(srv)
    message = _ready(node)["message"]
    _patch_conditions(srv, [{**c, "message": "edited by hand"} if c["type"] == "Ready" else c
                            for c in node["status"]["conditions"]])
    assert _ready(srv.kubectl_json("get", "node", srv.node))["message"] == "edited by hand"

    def put_back() -> dict | None:
        now = srv.kubectl_json("get", "node", srv.node)
        return now if _ready(now).get("message") == message else None
    back = wait_for(put_back, 90, 0.5, f"node {srv.node}'s Ready message put back")
    assert _ready(back)["lastTransitionTime"] == _ready(node)["lastTransitionTime"]
