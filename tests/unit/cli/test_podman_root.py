"""--podman-root (K3PY_PODMAN_ROOT, config key podman-root): an agent's own podman storage,
passed to every podman call as --root/--runroot/--tmpdir; also for the embedded agent."""

from __future__ import annotations

import os

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
    embedded = AgentConfig.for_node(srv, server="https://127.0.0.1:6443", token="t")
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


@pytest.mark.parametrize("argv,env,text,expected", [
    (["--podman-root", "/flag"], {"K3PY_PODMAN_ROOT": "/env"}, "podman-root: /file\n", "/flag"),
    ([], {"K3PY_PODMAN_ROOT": "/env"}, "podman-root: /file\n", "/env"),
    ([], {}, "podman-root: /file\n", "/file"),
    ([], {}, "", ""),
])
def test_airgap_import_reads_podman_root_like_the_agent(monkeypatch, tmp_path, argv, env,
                                                         text, expected):
    """`k3py airgap import` takes --podman-root from the one flag table (flag > env > file)."""
    from k3py.cli import airgap, flags
    for name in [n for n in os.environ if n.startswith("K3PY_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    monkeypatch.setattr(flags, "DEFAULT_CONFIG_FILE", str(cfg))
    tarball = tmp_path / "images.tar"
    tarball.write_bytes(b"")
    seen = {}

    async def fake_import_all(files, podman_root):
        seen.update(files=files, podman_root=podman_root)
        return []
    monkeypatch.setattr(airgap, "_import_all", fake_import_all)
    monkeypatch.setattr(airgap.shutil, "which", lambda name: "/usr/bin/" + name)
    assert airgap.airgap_command(["import", *argv, str(tarball)]) == 0
    assert seen == {"files": [str(tarball)], "podman_root": expected}
