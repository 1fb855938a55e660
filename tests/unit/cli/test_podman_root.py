"""--podman-root (K3PY_PODMAN_ROOT, config key podman-root): an agent's own podman storage,
passed to every podman call as --root/--runroot/--tmpdir; also for the embedded agent."""

from __future__ import annotations

import pytest

from k3py.cli.flags import agent_config, server_config
from k3py.config import AgentConfig, podman_storage_args

pytestmark = pytest.mark.unit


def test_flag_env_and_config_file(tmp_path):
    assert agent_config([], environ={}).podman_root == ""
    assert agent_config(["--podman-root", "/srv/p"], environ={}).podman_root == "/srv/p"
    assert agent_config([], environ={"K3PY_PODMAN_ROOT": "/e"}).podman_root == "/e"
    cfg = tmp_path / "config.yaml"
    cfg.write_text("podman-root: /from-file\n")
    assert agent_config(["--config", str(cfg)], environ={}).podman_root == "/from-file"
    srv = server_config(["--podman-root", "/s"], environ={})
    embedded = AgentConfig.for_node(srv, server="https://127.0.0.1:6443", token="t",
                                    embedded=True)
    assert embedded.podman_root == "/s"


def test_storage_args():
    assert podman_storage_args("") == ()
    assert podman_storage_args("/p") == ("--root", "/p/storage", "--runroot", "/p/run",
                                         "--tmpdir", "/p/tmp")
    long_root = "/var/lib/k3py/agents/a-very-long-directory-name-for-podman"
    args = podman_storage_args(long_root)
    runroot = args[args.index("--runroot") + 1]
    assert len(runroot) <= 50 and runroot != long_root + "/run"  # podman's limit
    assert args[:2] == ("--root", long_root + "/storage")
    assert podman_storage_args(long_root) == args  # stable across restarts
