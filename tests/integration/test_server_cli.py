"""`k3py server` as a user meets it: clear one-line errors with exit 1, restart keeps the CA,
certificates, token and data, `k3py token` and `--version`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.harness import ServerProcess, free_port

pytestmark = pytest.mark.integration


def k3py(*args: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("K3PY_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "k3py", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env)


def one_line_error(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_version():
    out = k3py("--version")
    assert out.returncode == 0 and out.stdout.startswith("k3py version v")


def test_unknown_flag_is_one_line(tmp_path):
    line = one_line_error(k3py("server", "--no-such-flag", "--data-dir", str(tmp_path)))
    assert "no-such-flag" in line


def test_bad_value_is_one_line(tmp_path):
    line = one_line_error(k3py("server", "--https-listen-port", "notaport",
                               "--data-dir", str(tmp_path)))
    assert "https-listen-port" in line


def test_occupied_port_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_line_error(k3py("server", "--bind-address", "127.0.0.1",
                                   "--https-listen-port", str(port), "--data-dir",
                                   str(tmp_path / "d"), "--write-kubeconfig",
                                   str(tmp_path / "kc"), "--disable-agent"))
    assert "in use" in line


@pytest.mark.skipif(os.geteuid() == 0 and not os.path.exists("/proc/self/status"),
                    reason="needs a non-writable path")
def test_unwritable_data_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = one_line_error(k3py("server", "--data-dir", str(blocker / "sub"),
                               "--https-listen-port", str(free_port()), "--write-kubeconfig",
                               str(tmp_path / "kc"), "--disable-agent"))
    assert "data dir" in line


def test_env_var_sets_flag(tmp_path):
    out = k3py("server", "--data-dir", str(tmp_path), env={"K3PY_HTTPS_LISTEN_PORT": "x"})
    assert "https-listen-port" in one_line_error(out).lower() or "K3PY_HTTPS_LISTEN_PORT" in out.stderr


def test_restart_keeps_ca_token_and_data(fresh_server):
    srv = fresh_server.start()
    tls = srv.data_dir / "server" / "tls"
    before = {p.name: p.read_bytes() for p in tls.iterdir() if p.is_file()}
    token = k3py("token", "--data-dir", str(srv.data_dir)).stdout.strip()
    assert token.startswith("K10") and "::server:" in token
    srv.kubectl("create", "configmap", "keep", "--from-literal=a=b")
    srv.stop()
    srv.start()
    after = {p.name: p.read_bytes() for p in tls.iterdir() if p.is_file()}
    assert before == after
    assert k3py("token", "--data-dir", str(srv.data_dir)).stdout.strip() == token
    assert srv.kubectl_json("get", "cm", "keep")["data"] == {"a": "b"}
    mode = os.stat(srv.kubeconfig).st_mode & 0o777
    assert mode == 0o600


def test_config_file_keys_are_flag_names(tmp_path):
    port = free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"https-listen-port: {port}\nbind-address: 127.0.0.1\n")
    srv = ServerProcess(tmp_path / "d", port=port)
    srv.command = lambda: [sys.executable, "-m", "k3py", "server", "--config", str(cfg),  # type: ignore[method-assign]
                           "--data-dir", str(srv.data_dir), "--write-kubeconfig",
                           str(srv.kubeconfig), "--disable-agent"]
    try:
        srv.start()
        assert "default" in srv.kubectl("get", "ns").stdout
    finally:
        srv.stop()


# ---------------------------------------------------------------- flags not implemented yet

@pytest.mark.parametrize("how", ["flag", "env", "config file"])
def test_disable_of_a_component_k3py_does_not_deploy_is_refused(tmp_path, how):
    args = ["server", "--data-dir", str(tmp_path / "d"), "--https-listen-port",
            str(free_port()), "--write-kubeconfig", str(tmp_path / "kc"), "--disable-agent"]
    env = {}
    if how == "flag":
        args += ["--disable", "dns"]
    elif how == "env":
        env["K3PY_DISABLE"] = "dns"
    else:
        cfg = tmp_path / "config.yaml"
        cfg.write_text("disable:\n  - dns\n")
        args += ["--config", str(cfg)]
    line = one_line_error(k3py(*args, env=env))
    assert "--disable dns" in line and "remove 'dns'" in line, line
    assert {"flag": "command line", "env": "K3PY_DISABLE",
            "config file": "config file"}[how] in line, line
    assert not (tmp_path / "d").exists()


def test_unimplemented_key_for_the_server_does_not_stop_the_agent(tmp_path):
    """One config.yaml serves both roles: the agent skips server-only keys, refused or not."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("datastore-endpoint: postgres://db/k3s\ncluster-cidr: 10.52.0.0/16\n")
    line = one_line_error(k3py("agent", "--config", str(cfg), "--data-dir", str(tmp_path)))
    assert "--server" in line and "datastore" not in line, line


def test_custom_service_cidr_is_in_the_serving_certificate(tmp_path):
    """In-cluster clients reach the API at the `kubernetes` Service's ClusterIP, the first
    address of --service-cidr: the serving certificate must name that address."""
    from k3py.pki import _cert_sans

    srv = ServerProcess(tmp_path / "d", extra_args=["--service-cidr", "10.96.0.0/12"])
    try:
        srv.start()
        svc = srv.kubectl_json("get", "service", "kubernetes", "-n", "default")
        assert svc["spec"]["clusterIP"] == "10.96.0.1"
        cert = (srv.data_dir / "server" / "tls" / "serving-kube-apiserver.crt").read_bytes()
        _, ips = _cert_sans(cert)
        assert "10.96.0.1" in ips and "10.43.0.1" not in ips, ips
    finally:
        srv.stop()
