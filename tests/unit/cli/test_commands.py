"""`k3py kubectl` (which kubectl, which KUBECONFIG) and `k3py check-config`'s detectors
(cgroup layout, containers.conf, catatonit, report format), without running podman or kubectl."""

from __future__ import annotations

import os
import sys

import pytest

from k3py.cli import check_config, kubectl, main

pytestmark = pytest.mark.unit


def test_kubeconfig_default_and_overrides():
    assert kubectl.kubectl_env({})["KUBECONFIG"] == "/etc/k3py/k3py.yaml"
    assert kubectl.kubectl_env({"K3PY_KUBECONFIG": "/k"})["KUBECONFIG"] == "/k"
    env = kubectl.kubectl_env({"KUBECONFIG": "/mine", "K3PY_KUBECONFIG": "/k"})
    assert env["KUBECONFIG"] == "/mine"


def _executable(path, text="#!/bin/sh\nexit 0\n"):
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_find_kubectl_skips_a_symlink_to_k3py_itself(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    me = _executable(tmp_path / "bin" / "k3py")
    monkeypatch.setattr(sys, "executable", str(me))
    monkeypatch.setattr(sys, "argv", [str(me)])
    link_dir = tmp_path / "links"
    link_dir.mkdir()
    os.symlink(me, link_dir / "kubectl")
    assert kubectl.find_kubectl(str(link_dir)) is None
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real = _executable(real_dir / "kubectl")
    assert kubectl.find_kubectl(f"{link_dir}{os.pathsep}{real_dir}") == str(real)
    beside = _executable(tmp_path / "bin" / "kubectl")
    assert kubectl.find_kubectl(str(link_dir)) == str(beside)  # next to the executable


def test_missing_kubectl_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "k3py"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["kubectl", "get", "nodes"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kubectl not found" in err[0]


def test_missing_default_kubeconfig_is_one_line(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _executable(bin_dir / "kubectl")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("K3PY_KUBECONFIG", str(tmp_path / "missing.yaml"))
    assert main(["kubectl", "get", "nodes"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no kubeconfig at" in err[0] and "missing.yaml" in err[0]


def test_kubectl_execs_with_kubeconfig(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl_bin = _executable(bin_dir / "kubectl")
    kubeconfig = tmp_path / "k3py.yaml"
    kubeconfig.write_text("apiVersion: v1\n")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("K3PY_KUBECONFIG", str(kubeconfig))
    calls = []
    monkeypatch.setattr(kubectl.os, "execve", lambda *a: calls.append(a))
    assert main(["kubectl", "get", "ns"]) == 0
    binary, args, env = calls[0]
    assert binary == str(kubectl_bin) and args == [str(kubectl_bin), "get", "ns"]
    assert env["KUBECONFIG"] == str(kubeconfig)


def test_cgroup_layout(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu memory\n")
    assert check_config.cgroup_layout(str(v2)) == "v2"
    hybrid = tmp_path / "hybrid"
    (hybrid / "unified").mkdir(parents=True)
    (hybrid / "memory").mkdir()
    assert check_config.cgroup_layout(str(hybrid)) == "hybrid"
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    assert check_config.cgroup_layout(str(v1)) == "v1"
    assert check_config.cgroup_layout(str(tmp_path / "none")) == "none"


def test_catatonit_on_path_or_in_podmans_helper_dirs(tmp_path, monkeypatch):
    (tmp_path / "bin").mkdir()
    (tmp_path / "libexec").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(check_config, "PODMAN_HELPER_DIRS", (str(tmp_path / "libexec"),))
    missing = check_config._catatonit_check("Container runtime")
    assert missing.status == "fail" and "apt-get install catatonit" in missing.advice
    helper = _executable(tmp_path / "libexec" / "catatonit")
    assert check_config._catatonit_check("Container runtime").status == "pass"
    helper.unlink()
    _executable(tmp_path / "bin" / "catatonit")
    assert check_config._catatonit_check("Container runtime").status == "pass"


def test_containers_conf_merge_and_ulimits(tmp_path):
    base = tmp_path / "base.conf"
    base.write_text('[engine]\nruntime = "crun"\n[containers]\nlog_driver = "k8s-file"\n')
    etc = tmp_path / "etc.conf"
    etc.write_text('[engine]\nruntime = "runc"\n\n[containers]\n'
                   'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n')
    conf, error = check_config.read_containers_conf([str(base), str(etc),
                                                     str(tmp_path / "missing")])
    assert error == ""
    assert conf["engine"]["runtime"] == "runc"
    assert conf["containers"]["log_driver"] == "k8s-file"
    limits = conf["containers"]["default_ulimits"]
    assert check_config._ulimit_values(limits, "nofile") == (1024, 1024)
    assert check_config._ulimit_values(limits, "core") is None
    bad = tmp_path / "bad.conf"
    bad.write_text("[engine\n")
    assert "not valid TOML" in check_config.read_containers_conf([str(bad)])[1]


def test_nofile_probe_leaves_limits_unchanged():
    import resource
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    forbidden, hard = check_config.nofile_raise_forbidden()
    assert isinstance(forbidden, bool) and hard == before[1]
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before


def test_report_format():
    checks = [check_config.Check("System", "python", "pass", "3.11.7"),
              check_config.Check("Container runtime", "OCI runtime", "fail",
                                 "cgroups hybrid, runtime = crun", 'put runtime = "runc"'),
              check_config.Check("Ports", "6443 (API server)", "warn", "in use", "stop it")]
    text = check_config.format_report(checks)
    assert "System:\n- python: 3.11.7: pass" in text
    assert "- OCI runtime: cgroups hybrid, runtime = crun: fail (fix: put runtime" in text
    assert text.endswith("STATUS: fail (1 failed, 1 warning)")


def test_check_config_exit_code(monkeypatch, capsys):
    monkeypatch.setattr(check_config, "run_checks", lambda data_dir: [
        check_config.Check("System", "python", "pass", "3.11")])
    assert main(["check-config"]) == 0
    assert "STATUS: pass" in capsys.readouterr().out
    monkeypatch.setattr(check_config, "run_checks", lambda data_dir: [
        check_config.Check("System", "sqlite", "fail", "apsw missing", "pip install apsw")])
    assert main(["check-config"]) == 1


@pytest.mark.parametrize("conf,layout,forbidden,expected", [
    ({"engine": {"runtime": "runc"},
      "containers": {"default_ulimits": ["nofile=1024:1024", "nproc=4096:4096"]}},
     "hybrid", True, {"OCI runtime": "pass", "container ulimits": "pass"}),
    ({}, "hybrid", True, {"OCI runtime": "fail", "container ulimits": "fail"}),
    ({"containers": {"default_ulimits": ["nofile=65536:65536"]}}, "v2", True,
     {"OCI runtime": "pass", "container ulimits": "fail"}),
    ({}, "v2", False, {"OCI runtime": "pass", "container ulimits": "pass"}),
])
def test_podman_checks(monkeypatch, conf, layout, forbidden, expected):
    monkeypatch.setattr(check_config.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(check_config, "_output", lambda cmd: "podman version 4.3.1")
    monkeypatch.setattr(check_config, "read_containers_conf", lambda: (conf, ""))
    monkeypatch.setattr(check_config, "cgroup_layout", lambda: layout)
    monkeypatch.setattr(check_config, "nofile_raise_forbidden", lambda: (forbidden, 20000))
    got = {c.name: c for c in check_config._podman_checks()}
    assert got["podman"].status == "pass" and got["podman"].detail == "version 4.3.1"
    for name, status in expected.items():
        assert got[name].status == status, got[name]
        if status == "fail":
            assert "/etc/containers/containers.conf" in got[name].advice
    if forbidden and expected["container ulimits"] == "fail":
        assert 'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]' in \
            got["container ulimits"].advice


def test_podman_api_check_finds_an_answering_service(tmp_path, monkeypatch):
    """A socket that answers the libpod _ping is reported as the system service the agent
    will use; a socket nobody serves, or no socket, means the agent starts its own."""
    import socket
    import threading

    from k3py.agent.runtime import libpod
    path = str(tmp_path / "podman.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def answer() -> None:
        conn, _ = srv.accept()
        with conn:
            assert conn.recv(1024).startswith(b"GET /v4.0.0/libpod/_ping ")
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
    t = threading.Thread(target=answer, daemon=True)
    t.start()
    monkeypatch.setattr(libpod, "system_sockets", lambda: [str(tmp_path / "none.sock"), path])
    got = check_config._api_check("Container runtime")
    t.join(5)
    assert (got.status, got.detail) == ("pass", f"system service at {path}")
    srv.close()  # nobody serves it now
    got = check_config._api_check("Container runtime")
    assert got.status == "pass" and "the agent starts its own" in got.detail


def test_kernel_modules_from_the_kernel_config(monkeypatch):
    monkeypatch.setattr(check_config.os.path, "isdir", lambda path: False)
    monkeypatch.setattr(check_config, "_read", lambda path: "")
    monkeypatch.setattr(check_config.shutil, "which", lambda name: None)
    got = {c.name: c for c in check_config.kernel_checks(
        "6.6.31+rpt-rpi-v8", "CONFIG_OVERLAY_FS=y\nCONFIG_BRIDGE_NETFILTER=m\n")}
    assert got["kernel version"].status == "pass"
    assert got["module overlay"].status == "pass"
    assert got["module br_netfilter"].status == "warn"
    assert got["module br_netfilter"].advice.startswith("modprobe br_netfilter")
    assert got["module nf_tables"].status == "fail"  # required: the Service proxy
    assert "CONFIG_NF_TABLES" in got["module nf_tables"].advice
    assert check_config.kernel_checks("4.9.0", "")[0].status == "warn"


def test_memory_controller_and_the_pi_fix(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpuset cpu io pids\n")  # a Pi without the fix
    got = {c.name: c for c in check_config.cgroup_checks(str(v2), str(tmp_path / "none"))}
    assert got["cgroup version"].detail == "v2 (unified)"
    assert got["memory controller"].status == "fail"
    assert "cgroup_memory=1 cgroup_enable=memory" in got["memory controller"].advice
    (v2 / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert check_config.memory_controller(str(v2))
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    cgroups = tmp_path / "cgroups"
    cgroups.write_text("#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t4\t1\t0\n")
    assert not check_config.memory_controller(str(v1), str(cgroups))
    cgroups.write_text("memory\t4\t1\t1\n")
    assert check_config.memory_controller(str(v1), str(cgroups))


def test_data_dir_space_looks_at_the_nearest_existing_parent(tmp_path):
    got = check_config.disk_check(str(tmp_path / "not" / "yet"))
    assert got.name == "data-dir space" and "GB free" in got.detail


def test_clock_before_release_or_the_ca_fails(tmp_path):
    import datetime as dt

    from k3py import pki
    old = dt.datetime(1970, 1, 1, 0, 5, tzinfo=dt.UTC)  # a Pi booted offline, no RTC
    got = check_config.clock_check(str(tmp_path), now=old)
    assert got.status == "fail" and "timedatectl set-ntp true" in got.advice
    assert check_config.clock_check(str(tmp_path)).status == "pass"
    tls = tmp_path / "server" / "tls"
    pki.ensure_pki(str(tls), sans=["localhost"], ips=["127.0.0.1"], service_ip="10.43.0.1")
    got = check_config.clock_check(str(tmp_path), now=dt.datetime(2025, 6, 1, tzinfo=dt.UTC))
    assert got.status == "fail" and "this server's CA" in got.detail


def test_check_config_takes_the_data_dir(monkeypatch, capsys, tmp_path):
    seen = []
    monkeypatch.setattr(check_config, "run_checks", lambda data_dir: seen.append(data_dir) or [
        check_config.Check("System", "python", "pass", "3.11")])
    assert main(["check-config", "--data-dir", str(tmp_path)]) == 0
    assert seen == [str(tmp_path)]
    assert main(["check-config", "extra"]) == 1
