"""Shared fixtures: a real k3py server per test module (`server`) or per test (`fresh_server`);
the markers by folder, so a test under tests/unit is `unit` even if its module forgets; and the
groups that let `pytest -n 2 --dist loadgroup` (scripts/test.sh) run two workers safely.

Grouping: every test that may touch what a host has only one of (podman pods and networks, the
cluster DNS address on lo, nftables tables, network namespaces, ports 80/443, dist/) is in the
one group `host`, so those run one after another on one worker, in file order. Modules that only
start their own servers on free ports with their own data dirs (`_PARALLEL_SAFE`, checked by
hand: no agent, no podman, no nft, no fixed address) run on the other worker, one group per
module so its module-scoped server is started once. A new module is `host` until listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import ServerProcess

_MARK_BY_FOLDER = {"unit": pytest.mark.unit, "integration": pytest.mark.integration,
                   "e2e": pytest.mark.integration}  # the demos' run.sh, for real
_TESTS = Path(__file__).parent
_PARALLEL_SAFE = frozenset({
    "test_audit_log.py", "test_bootstrap_tokens.py", "test_crds.py", "test_dashboard_live.py",
    "test_devices_bus.py",
    "test_dual_stack_api.py",
    "test_fuzz_api.py", "test_hostile_bodies.py", "test_kubectl_basics.py",
    "test_kubectl_versions.py",
    "test_namespaces_gc.py", "test_node_authorizer.py", "test_node_clock_skew.py",
    "test_pod_security.py",
    "test_postgres.py", "test_python_client.py", "test_rbac.py", "test_request_limits.py",
    "test_scheduling.py", "test_secrets_encryption.py", "test_server_cli.py",
    "test_snapshots.py", "test_store_kill9.py", "test_tunnel_skew.py",
    "test_two_servers_one_process.py",
    "test_workloads.py",
})


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.relative_to(_TESTS).parts[0] if item.path.is_relative_to(_TESTS) else ""
        mark = _MARK_BY_FOLDER.get(folder)
        if mark is not None and item.get_closest_marker(mark.name) is None:
            item.add_marker(mark)
        if folder != "unit":
            name = item.path.name
            item.add_marker(pytest.mark.xdist_group(name if name in _PARALLEL_SAFE else "host"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("k3py"))
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def fresh_server(tmp_path):
    srv = ServerProcess(tmp_path / "k3py")
    try:
        yield srv
    finally:
        srv.stop()
