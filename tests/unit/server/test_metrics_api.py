"""metrics-server's API in k3py: the usage report both tunnel ends speak, the store that keeps
each node's newest one (and forgets a quiet node), the NodeMetrics/PodMetrics objects and
their quantities as metrics-server writes them, and their table."""

from __future__ import annotations

from fractions import Fraction

import pytest

from k3py.api.kinds import metrics as kinds
from k3py.api.kinds.printers import build_table
from k3py.api.quantity import format_quantity, parse_quantity
from k3py.api.resources import METRICS_RESOURCES
from k3py.server.metrics import store as store_module
from k3py.server.metrics.store import UsageStore
from k3py.server.rbac.defaults import default_cluster_roles
from k3py.tunnel.protocol import PodUsage, Usage, UsageReport

pytestmark = pytest.mark.unit


def _report(ts: float, *pods: PodUsage, window: float = 15.0) -> UsageReport:
    return UsageReport(ts, window, Usage(1_500_000_000, 2 ** 30), pods)


def test_usage_report_round_trips_and_refuses_nonsense():
    pod = PodUsage("default", "web", "uid-1", {"app": Usage(250_000_000, 4096)})
    report = _report(1000.0, pod)
    assert UsageReport.from_content(report.to_content()) == report
    for bad in (None, [], {"timestamp": 1, "window": 0, "node": {"cpu": 1, "memory": 1}},
                {"timestamp": 1, "window": 1, "node": {"cpu": -1, "memory": 1}},
                {"timestamp": 1, "window": 1, "node": {"cpu": 1, "memory": 1},
                 "pods": [{"namespace": "", "name": "x", "uid": "u", "containers": {}}]}):
        with pytest.raises(ValueError):
            UsageReport.from_content(bad)


def test_store_keeps_the_newest_report_and_forgets_quiet_nodes():
    now = [1000.0]
    store = UsageStore(clock=lambda: now[0])
    old = PodUsage("default", "a", "uid-a", {"c": Usage(1, 1)})
    store.record("n1", _report(1000.0, old))
    assert store.pod("uid-a").usage == old
    now[0] = 1015.0
    store.record("n1", _report(1015.0, PodUsage("default", "b", "uid-b", {"c": Usage(2, 2)})))
    assert store.pod("uid-a") is None, "a pod gone from the node's newest report"
    assert store.pod("uid-b").timestamp == 1015.0
    now[0] = 1015.0 + 60
    assert store.node("n1") is not None
    now[0] += 1
    assert store.node("n1") is None and store.pod("uid-b") is None



def test_the_nodes_kept_are_bounded_stale_ones_first_else_the_oldest(monkeypatch):
    """Node names that stopped reporting (deleted nodes) or a peer sharing ever more of them
    cannot grow the store past MAX_NODES; a real node that lost its place gets it back with
    its next report."""
    monkeypatch.setattr(store_module, "MAX_NODES", 3)
    now = [1000.0]
    store = UsageStore(clock=lambda: now[0])
    pod = PodUsage("default", "a", "uid-a", {"c": Usage(1, 1)})
    store.record("quiet", _report(1000.0, pod))
    now[0] = 1100.0  # "quiet" is stale now
    store.record("n1", _report(1090.0))
    store.record("n2", _report(1095.0))
    store.record("n3", _report(1100.0))  # full: the stale one makes room
    assert len(store._nodes) == 3 and store.pod("uid-a") is None
    assert "quiet" not in store._nodes and "uid-a" not in store._pods
    for i in range(100):  # a flood of fresh names: the oldest report goes each time
        store.record(f"flood{i}", _report(1100.0), newer_only=True)
    assert len(store._nodes) == 3 and store.node("n1") is None and store.node("n3") is None
    store.record("n1", _report(1101.0))
    assert store.node("n1") is not None and len(store._nodes) == 3


def test_quantities_in_upstreams_canonical_form():
    assert format_quantity(Fraction(1_000_263_267, 10 ** 9)) == "1000263267n"
    assert format_quantity(Fraction(250, 1000)) == "250m"
    assert format_quantity(2) == "2"
    assert format_quantity(0) == "0"
    assert format_quantity(276 * 1024, binary=True) == "276Ki"
    assert format_quantity(2 ** 30, binary=True) == "1Gi"
    assert format_quantity(1000, binary=True) == "1000"
    for text in ("1000263267n", "250m", "276Ki", "1Gi"):
        assert format_quantity(parse_quantity(text), binary=text.endswith("i")) == text


def test_node_and_pod_metrics_as_metrics_server_writes_them():
    node = {"metadata": {"name": "pi", "labels": {"kubernetes.io/hostname": "pi"}}}
    obj = kinds.node_metrics(node, 0.0, 15.0, 1_500_000_000, 2 ** 20 * 3, now=0.0)
    assert obj == {"kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                   "metadata": {"name": "pi", "creationTimestamp": "1970-01-01T00:00:00Z",
                                "labels": {"kubernetes.io/hostname": "pi"}},
                   "timestamp": "1970-01-01T00:00:00Z", "window": "15s",
                   "usage": {"cpu": "1500m", "memory": "3Mi"}}
    pod = {"metadata": {"name": "web", "namespace": "default"}}
    obj = kinds.pod_metrics(pod, 0.0, 61.5, [("app", 12345, 4096), ("side", 0, 8192)], 0.0)
    assert obj["window"] == "1m1.5s" and obj["metadata"]["namespace"] == "default"
    assert obj["containers"] == [{"name": "app", "usage": {"cpu": "12345n", "memory": "4Ki"}},
                                 {"name": "side", "usage": {"cpu": "0", "memory": "8Ki"}}]
    table = build_table(METRICS_RESOURCES[1], [obj])
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "CPU", "Memory",
                                                               "Window"]
    assert table["rows"][0]["cells"] == ["web", "12345n", "12Ki", "1m1.5s"]


def test_view_edit_and_admin_aggregate_metrics_read():
    role = next(r for r in default_cluster_roles()
                if r["metadata"]["name"] == "system:aggregated-metrics-reader")
    assert role["rules"] == [{"verbs": ["get", "list", "watch"], "apiGroups": ["metrics.k8s.io"],
                              "resources": ["pods", "nodes"]}]
    labels = role["metadata"]["labels"]
    for to in ("view", "edit", "admin"):
        assert labels[f"rbac.authorization.k8s.io/aggregate-to-{to}"] == "true"
