"""A workload's logs in one stream on the tab's live websocket, on a real server
(--disable-agent), a real agent and podman:

- a Deployment of 6 replicas, each printing its own name every second: its Logs view in a
  real Chromium shows lines of all 6 pods (more than a browser's 6 connections to a server
  would have allowed as one streamed GET each), each line under its own pod's name, each pod
  in its own colour;
- the node really follows the 6 logs (6 `podman logs --follow` of the Deployment's
  containers) while the view is open, and none once the tab leaves the view (the feed
  cancelled) or logs out (its websocket closed);
- on the websocket: more pods than MAX_PODS is a 400, a user who may not `get pods/log` a
  403, and a pod that does not exist ends with its own error while the others stream."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from k3py.server.dashboard.logs import MAX_PODS
from tests.harness import ServerProcess, clean_env, wait_for
from tests.integration.agents import (
    IMAGE,
    build_test_image,
    followed_logs,
    kubectl_popen,
    node_ready,
    read_until,
    remove_podman_pods,
    stop_proc,
)
from tests.integration.test_dashboard import (  # noqa: F401 - browser: the module's fixture
    _log_in,
    _logged_out,
    _login,
    _next,
    _session,
    browser,
    run,
)
from tests.integration.test_dashboard_mqtt import _token

pytestmark = pytest.mark.integration

NODE = "logs-view"
DEPLOYMENT = "namer"
REPLICAS = 6
# may read pods, not their logs (the "view" role may read both)
_POD_READER = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "pod-reader"},
               "rules": [{"apiGroups": [""], "resources": ["pods"],
                          "verbs": ["get", "list", "watch"]}]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("logs-dashboard")
    build_test_image(tmp / "busybox.tar")
    srv = ServerProcess(tmp / "srv").start()
    log = open(tmp / "agent.log", "wb")
    proc = subprocess.Popen(srv.agent_command(tmp / "agent", NODE), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, env=clean_env())
    try:
        wait_for(lambda: node_ready(srv, NODE), 60, 0.3,
                 f"node {NODE} Ready (agent log: {_tail(tmp / 'agent.log')})")
        srv.kubectl("apply", "-f", "-", input=json.dumps(_namer()))
        wait_for(lambda: _running(srv) == REPLICAS, 120, 0.5,
                 f"the {DEPLOYMENT} Deployment's {REPLICAS} pods Running")
        yield srv
    finally:
        stop_proc(proc)
        log.close()
        remove_podman_pods(NODE)
        srv.stop()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


def _namer() -> dict:
    """Each pod prints its own name (the downward API) every second."""
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": DEPLOYMENT, "namespace": "default"},
            "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": DEPLOYMENT}},
                     "template": {"metadata": {"labels": {"app": DEPLOYMENT}}, "spec": {
                         "nodeName": NODE, "terminationGracePeriodSeconds": 0,
                         "containers": [{
                             "name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                             "env": [{"name": "POD", "valueFrom": {
                                 "fieldRef": {"fieldPath": "metadata.name"}}}],
                             "command": ["sh", "-c",
                                         "while true; do echo I am $POD; sleep 1; done"]}]}}}}


def _pods(srv: ServerProcess) -> list[dict]:
    return srv.kubectl_json("get", "pods", "-l", f"app={DEPLOYMENT}")["items"]


def _running(srv: ServerProcess) -> int:
    return sum(p["status"].get("phase") == "Running" for p in _pods(srv))


def _followed_logs() -> int:
    """The node's `podman logs --follow` of the Deployment's containers."""
    return followed_logs(f"default_{DEPLOYMENT}-")


def _shown(driver) -> dict[str, set[str]]:
    """The log view's lines' texts by the pod named before them."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#logs .line')].map((l) => "
        "[l.dataset.pod, l.querySelector('.pod')?.className || '', l.textContent])")
    out: dict[str, set[str]] = {}
    for pod, colour, text in rows:
        out.setdefault(pod, set()).add(f"{colour}|{text}")
    return out


def test_a_deployments_six_pods_in_one_stream_closed_when_left(cluster, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    srv = cluster
    token = _token(srv, "logs-admin", "cluster-admin")
    names = sorted(p["metadata"]["name"] for p in _pods(srv))
    assert _followed_logs() == 0
    _logged_out(browser, srv)
    _log_in(browser, token)

    browser.find_element(By.XPATH, "//nav/button[text()='Workloads']").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f"[data-workload='{DEPLOYMENT}']"),
             15, what=f"the {DEPLOYMENT} Deployment in the workloads")[0].click()
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#workload-pods tbody tr"))
             == REPLICAS, 15, what=f"the Deployment's {REPLICAS} pods")
    browser.find_element(By.ID, "workload-logs").click()
    wait_for(lambda: sorted(_shown(browser)) == names, 20,
             what=f"lines of all {REPLICAS} pods in one stream (it shows "
                  f"{sorted(_shown(browser))})")
    shown = _shown(browser)
    colours = set()
    for pod, lines in shown.items():
        for line in lines:
            colour, text = line.split("|", 1)
            assert text == f"{pod} I am {pod}", (pod, text)  # each line under its own pod
            colours.add(colour)
    assert colours == {f"pod c{i}" for i in range(REPLICAS)}, colours
    assert f"of {REPLICAS} pods" in browser.find_element(By.ID, "log-count").text
    wait_for(lambda: _followed_logs() == REPLICAS, 15,
             what=f"the node following {REPLICAS} logs (it follows {_followed_logs()})")
    browser.find_element(By.XPATH, "//button[text()='Back']").click()  # the feed cancelled
    wait_for(lambda: _followed_logs() == 0, 15,
             what=f"the node's log streams closed once the view was left ({_followed_logs()} "
                  "still followed)")
    wait_for(lambda: browser.find_elements(By.ID, "workload-logs"), 15,
             what="the Deployment's page again")[0].click()
    wait_for(lambda: _followed_logs() == REPLICAS, 15,
             what=f"the node following {REPLICAS} logs again")
    browser.find_element(By.ID, "logout").click()  # the websocket closed
    wait_for(lambda: _followed_logs() == 0, 15,
             what=f"the node's log streams closed once the tab logged out ({_followed_logs()} "
                  "still followed)")


def test_the_feeds_bounds_and_a_pods_own_error(cluster):
    srv = cluster
    admin = _token(srv, "logs-feed-admin", "cluster-admin")
    srv.kubectl("apply", "-f", "-", input=json.dumps(_POD_READER))
    reader = _token(srv, "logs-pod-reader", "pod-reader")
    names = sorted(p["metadata"]["name"] for p in _pods(srv))

    async def ask(token: str, msg: dict, until) -> list[dict]:
        async with await _session() as http:
            headers = {**(await _login(http, srv.url, token)), "Origin": srv.url}
            async with http.ws_connect(srv.url + "/dashboard/api/live", headers=headers) as ws:
                await ws.send_json({"id": "l", "op": "logs", "namespace": "default", **msg})
                seen = [await _next(ws, "l")]
                while not until(seen):
                    seen.append(await _next(ws, "l"))
                return seen

    def first_error(seen: list[dict]) -> bool:
        return seen[-1]["type"] == "error"
    [too_many] = run(ask(admin, {"pods": [f"p{i}" for i in range(MAX_PODS + 1)]},
                         first_error))
    assert too_many["code"] == 400 and f"at most {MAX_PODS}" in too_many["message"], too_many
    [refused] = run(ask(reader, {"pods": names[:1]}, first_error))
    assert refused["code"] == 403 and 'resource "pods/log"' in refused["message"], refused

    def lines_and_ghost(seen: list[dict]) -> bool:
        data = [m["data"] for m in seen if m["type"] == "feed"]
        return any(i == 0 for d in data for i, _ in d.get("lines", [])) and \
            any(i == 1 for d in data for i, _ in d.get("ended", []))
    seen = run(ask(admin, {"pods": [names[0], "no-such-pod"], "follow": True,
                           "tailLines": 2}, lines_and_ghost))
    assert seen[0] == {"id": "l", "type": "feed", "data": {"reset": True}}, seen[0]
    data = [m["data"] for m in seen[1:]]
    texts = [text for d in data for i, text in d.get("lines", []) if i == 0]
    assert texts and texts[0].split(" ", 1)[1] == f"I am {names[0]}", texts
    [ghost] = [error for d in data for i, error in d.get("ended", []) if i == 1]
    assert 'pods "no-such-pod" not found' in ghost, ghost


def test_a_followed_log_of_a_quiet_pod_ends_when_kubectl_goes(cluster):
    """`kubectl logs -f` of a pod that prints nothing more, then kubectl stopped: the server
    ends its side (it asks whether its client is still there while the log is quiet), so the
    node's `podman logs --follow` of it ends too, without the pod printing again (the same
    end a peer's closed request gets: the dashboard's logs through another server)."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "quiet"},
           "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "c", "image": IMAGE,
                                    "imagePullPolicy": "IfNotPresent",
                                    "command": ["sh", "-c", "echo hello; sleep 3600"]}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    try:
        wait_for(lambda: cluster.kubectl("logs", "quiet", check=False).stdout == "hello\n",
                 60, 0.3, "the quiet pod's hello")
        # with timestamps the node reads the log with `podman logs` (whose process shows
        # here), not over the podman API
        proc = kubectl_popen(cluster, "logs", "-f", "--timestamps", "quiet")
        try:
            assert read_until(proc, "hello", 20).endswith(" hello\n")
            wait_for(lambda: followed_logs("default_quiet_") == 1, 20, 0.3,
                     "the node following the pod's log")
        finally:
            stop_proc(proc)
        wait_for(lambda: followed_logs("default_quiet_") == 0, 30, 0.3,
                 f"the node's log stream ended once kubectl went "
                 f"({followed_logs('default_quiet_')} still follow)")
    finally:
        cluster.kubectl("delete", "pod", "quiet", "--wait=false")
