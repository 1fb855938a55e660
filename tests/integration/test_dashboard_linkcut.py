"""The Nodes view across a cut link: a real `k3py agent` in a network namespace joined to a
real server (tests/integration/offline.py); the node's link is cut (the host's veth end down:
the agent is not stopped, nothing closes the connection, the node just goes silent), and the
page, left open in a real headless Chromium, shows its tunnel offline once the server's
heartbeat has closed it, then connected again, one reconnect counted, once the link is back;
all pushed on the tab's live socket, with no reload. bench/dashboard_cut.py times the first
part. Needs root (`ip netns`); skipped otherwise."""

from __future__ import annotations

import pytest

from k3py.tunnel.protocol import HEARTBEAT_TIMEOUT
from tests.harness import wait_for
from tests.integration.netns import netns_factory  # noqa: F401 - fixture
from tests.integration.offline import OfflineNode
from tests.integration.test_dashboard import (  # noqa: F401 - browser: the module's fixture
    _css_text,
    _log_in,
    _open,
    browser,
)

pytestmark = pytest.mark.integration

# deadlines for the waits, not figures: the heartbeat closes a silent link within
# HEARTBEAT_TIMEOUT; back, the agent dials again within its backoff's cap (10 s) of noticing
BOUND = HEARTBEAT_TIMEOUT + 30.0


@pytest.fixture
def cut_node(netns_factory, tmp_path):  # noqa: F811 - the fixture imported above
    node = OfflineNode(netns_factory(), tmp_path, "dash-cut")
    try:
        node.start()
        yield node
    finally:
        node.stop()


def test_a_cut_link_shows_offline_then_connected_again(cut_node: OfflineNode, browser):  # noqa: F811
    node = cut_node
    node.srv.kubectl("-n", "kube-system", "create", "serviceaccount", "cut-admin")
    node.srv.kubectl("create", "clusterrolebinding", "cut-admin", "--clusterrole=cluster-admin",
                     "--serviceaccount=kube-system:cut-admin")
    token = node.srv.kubectl("-n", "kube-system", "create", "token", "cut-admin").stdout.strip()
    browser.get(node.srv.url + "/dashboard/")
    _log_in(browser, token)
    _open(browser, "Nodes", "nodes")
    cell = f"td.tunnel[data-node='{node.node}']"

    def shows() -> str:
        return _css_text(browser, cell)
    wait_for(lambda: shows().startswith("connected since") and "rtt" in shows(), 30,
             what=f"{node.node}'s tunnel connected with its round trip (it shows {shows()!r})")

    marks = node.log_marks()
    node.cut()
    wait_for(lambda: shows().startswith("offline last seen"), BOUND,
             what=f"{node.node} offline in the page once its link was cut (it shows "
                  f"{shows()!r})" + node.logs())
    assert node.proc is not None and node.proc.poll() is None, "the agent kept running"
    wait_for(lambda: node.tunnel_lost(marks), BOUND, 0.3,
             "both ends logged the tunnel's loss" + node.logs())

    node.restore()
    wait_for(lambda: shows().startswith("connected since") and "1 reconnects" in shows(), BOUND,
             what=f"{node.node} connected again in the page, one reconnect counted (it shows "
                  f"{shows()!r})" + node.logs())
