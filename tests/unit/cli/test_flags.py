"""The flag table: precedence flag > env var > config file > default, the K3s-style env names,
config-file rules, and every usage error as one `k3py: error:` line with exit code 1."""

from __future__ import annotations

import dataclasses
import os
import sys

import pytest

from k3py import PROGRAM, __version__
from k3py.cli import flags, main
from k3py.cli.flags import FLAGS, UsageError, agent_config, parse, server_config
from k3py.config import AgentConfig, ServerConfig
from k3py.server.bootstrap import disabled_controllers

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No K3PY_* from the developer's shell, no /etc/k3py/config.yaml from the host."""
    for name in list(os.environ):
        if name.startswith("K3PY_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(flags, "DEFAULT_CONFIG_FILE", str(tmp_path / "absent" / "config.yaml"))


def write(tmp_path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(capsys, *argv: str) -> str:
    code, _, err = run_main(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{PROGRAM}: error: ")
    return lines[0]


# ---------------------------------------------------------------- defaults and paths

def test_no_flags_give_the_dataclass_defaults():
    assert server_config([], environ={}) == ServerConfig()
    assert agent_config([], environ={}) == AgentConfig()


def test_defaults_and_derived_paths():
    c = ServerConfig(data_dir="/d")
    assert (c.https_listen_port, c.bind_address, c.write_kubeconfig) == \
        (6443, "0.0.0.0", "/etc/k3py/k3py.yaml")
    assert (c.service_cidr, c.service_node_port_range) == ("10.43.0.0/16", "30000-32767")
    assert (c.compact_interval, c.compact_min_retain) == (300.0, 1000)
    assert c.db_path == "/d/server/db/state.db"
    assert (c.tls_dir, c.token_path, c.manifests_dir) == \
        ("/d/server/tls", "/d/server/token", "/d/server/manifests")
    assert (c.agent_dir, c.images_dir, c.meta_db_path) == \
        ("/d/agent", "/d/agent/images", "/d/agent/meta.db")
    assert c.kubernetes_service_ip == "10.43.0.1"
    assert c.kubeconfig_mode == 0o600


def test_embedded_agent_and_k3py_agent_get_the_same_node_options(tmp_path):
    """One function (AgentConfig.for_node) makes both: every node option reaches the agent."""
    node_flags = ["--data-dir", str(tmp_path), "--node-name", "pi", "--with-node-id",
                  "--node-label", "a=b", "--node-taint", "k=v:NoSchedule", "--node-ip",
                  "10.0.0.5", "--podman-root", "/p", "--container-runtime-endpoint",
                  "unix:///run/p.sock", "--debug"]
    server = server_config([*node_flags, "--token", "given"], {})
    embedded = AgentConfig.for_node(server, server="https://127.0.0.1:6443", token="tok")
    agent = agent_config([*node_flags, "--server", "https://127.0.0.1:6443", "--token",
                          "tok"], {})
    assert embedded == agent
    assert (embedded.server, embedded.token, embedded.labels) == \
        ("https://127.0.0.1:6443", "tok", {"a": "b"})
    assert embedded.effective_node_name == agent.effective_node_name
    assert agent.effective_node_name.startswith("pi-")


def test_node_name_is_the_flag_or_the_hostname(monkeypatch):
    monkeypatch.setattr("socket.gethostname", lambda: "Pi-4.lan")
    assert agent_config([], {}).effective_node_name == "pi-4"
    assert agent_config([], {"K3PY_NODE_NAME": "edge-1"}).effective_node_name == "edge-1"
    assert server_config(["--node-name", "srv"], {}).effective_node_name == "srv"


def test_every_config_field_is_a_flag():
    """A field no flag sets is dead; a refused flag has no field (nothing would read it); a
    list flag with some values refused (--disable) has one for the values it implements."""
    attrs = {f.attr for f in FLAGS}
    for cls in (ServerConfig, AgentConfig):
        for field in dataclasses.fields(cls):
            assert field.name in attrs, field.name
    for flag in FLAGS:
        if flag.not_implemented:
            assert flag.attr not in {f.name for f in dataclasses.fields(ServerConfig)}


def test_with_node_id_is_persistent(tmp_path):
    c = AgentConfig(data_dir=str(tmp_path), node_name="pi", with_node_id=True)
    name = c.effective_node_name
    assert name.startswith("pi-") and len(name) == len("pi-") + 8
    assert AgentConfig(data_dir=str(tmp_path), node_name="pi",
                       with_node_id=True).effective_node_name == name


# ---------------------------------------------------------------- precedence

def test_precedence_flag_env_file_default(tmp_path):
    cfg = write(tmp_path, "https-listen-port: 1111\n")
    env = {"K3PY_CONFIG_FILE": cfg, "K3PY_HTTPS_LISTEN_PORT": "2222"}
    assert server_config(["--https-listen-port", "3333"], env).https_listen_port == 3333
    assert server_config([], env).https_listen_port == 2222
    assert server_config([], {"K3PY_CONFIG_FILE": cfg}).https_listen_port == 1111
    assert server_config([], {}).https_listen_port == 6443


def test_config_flag_beats_config_env(tmp_path):
    a = write(tmp_path, "data-dir: /from-flag\n")
    b = tmp_path / "b.yaml"
    b.write_text("data-dir: /from-env\n")
    c = server_config(["--config", a], {"K3PY_CONFIG_FILE": str(b)})
    assert c.data_dir == "/from-flag" and parse(["--config", a], "server", {})["config"] == a
    assert server_config([], {"K3PY_CONFIG_FILE": str(b)}).data_dir == "/from-env"


def test_default_config_file_is_read_when_present(tmp_path, monkeypatch):
    path = write(tmp_path, "node-name: from-default-file\n")
    monkeypatch.setattr(flags, "DEFAULT_CONFIG_FILE", path)
    c = agent_config([], {})
    assert c.node_name == "from-default-file" and parse([], "agent", {})["config"] == path


def test_repeatable_flags_accumulate_and_split_commas(tmp_path):
    c = server_config(["--tls-san", "a.example", "--tls-san=b.example,10.0.0.1",
                       "--node-label", "zone=lab"], {})
    assert c.tls_san == ("a.example", "b.example", "10.0.0.1")
    assert c.node_label == ("zone=lab",)
    assert server_config([], {"K3PY_TLS_SAN": "x, y"}).tls_san == ("x", "y")
    cfg = write(tmp_path, "tls-san:\n  - one\n  - two\nnode-taint: [\"gpu=true:NoSchedule\"]\n")
    c = server_config(["--config", cfg], {})
    assert c.tls_san == ("one", "two") and c.node_taint == ("gpu=true:NoSchedule",)
    # a higher source replaces, it does not append
    assert server_config(["--config", cfg, "--tls-san", "three"], {}).tls_san == ("three",)


@pytest.mark.parametrize("argv,env,text,expected", [
    (["--disable-agent"], {}, "", True),
    (["--disable-agent=false"], {"K3PY_DISABLE_AGENT": "true"}, "", False),
    ([], {"K3PY_DISABLE_AGENT": "1"}, "", True),
    ([], {}, "disable-agent: true\n", True),
    ([], {"K3PY_DISABLE_AGENT": "no"}, "disable-agent: true\n", False),
])
def test_bool_flags(tmp_path, argv, env, text, expected):
    if text:
        env = {**env, "K3PY_CONFIG_FILE": write(tmp_path, text)}
    assert server_config(argv, env).disable_agent is expected


def test_k3s_style_env_names():
    c = agent_config([], {"K3PY_URL": "https://srv:6443/", "K3PY_TOKEN": "K10abc::server:s",
                          "K3PY_NODE_NAME": "pi-1", "K3PY_DATA_DIR": "/data"})
    assert (c.server, c.token, c.node_name, c.data_dir) == \
        ("https://srv:6443", "K10abc::server:s", "pi-1", "/data")
    assert agent_config([], {"K3PY_SERVER": "https://b:6443"}).server == "https://b:6443"
    s = server_config([], {"K3PY_KUBECONFIG_OUTPUT": "/k.yaml", "K3PY_KUBECONFIG_MODE": "644"})
    assert (s.write_kubeconfig, s.write_kubeconfig_mode) == ("/k.yaml", "0644")
    assert server_config([], {"K3PY_WRITE_KUBECONFIG": "/w.yaml"}).write_kubeconfig == "/w.yaml"


def test_every_flag_has_its_derived_env_var():
    for flag in FLAGS:
        assert flag.env_vars[-1] == "K3PY_" + flag.name.upper().replace("-", "_")
        assert flag.help.startswith("("), flag.name  # K3s-style section tag


def test_short_flags():
    c = agent_config(["-s", "https://h:6443", "-t", "tok", "-d", "/x"], {})
    assert (c.server, c.token, c.data_dir) == ("https://h:6443", "tok", "/x")


def test_values_are_normalised():
    c = server_config(["--write-kubeconfig-mode", "644", "--service-node-port-range",
                       "30000-30100", "--node-ip", "192.168.1.2"], {})
    assert c.write_kubeconfig_mode == "0644" and c.kubeconfig_mode == 0o644
    assert c.service_node_port_range == "30000-30100" and c.node_ip == "192.168.1.2"
    assert server_config(["--service-cidr", "10.96.0.0/12"], {}).kubernetes_service_ip == \
        "10.96.0.1"


def test_config_file_may_hold_keys_of_the_other_command(tmp_path):
    cfg = write(tmp_path, "server: https://srv:6443\ntls-san: [a]\nnode-name: n1\n"
                "datastore-endpoint: postgres://k3py@db/k3py\n")
    assert server_config(["--config", cfg], {}).node_name == "n1"
    assert agent_config(["--config", cfg], {}).server == "https://srv:6443"


def test_server_joining_another_needs_the_shared_datastore():
    assert server_config(["--server", "https://a:6443", "--datastore-endpoint",
                          "postgres://k3py@db/k3py"], {}).server == "https://a:6443"
    with pytest.raises(UsageError, match="--datastore-endpoint"):
        server_config(["--server", "https://a:6443"], {})


def test_node_monitor_periods_as_kube_controller_manager_args():
    cfg = server_config(["--kube-controller-manager-arg", "node-monitor-grace-period=20s",
                         "--kube-controller-manager-arg", "node-monitor-period=500ms"], {})
    assert cfg.controller_manager_options == {"node-monitor-grace-period": 20.0,
                                              "node-monitor-period": 0.5}
    with pytest.raises(UsageError, match="node-monitor-period: expected a duration above 0"):
        server_config(["--kube-controller-manager-arg", "node-monitor-period=0s"], {})


def test_empty_config_file_is_fine(tmp_path):
    assert server_config(["--config", write(tmp_path, "")], {}).https_listen_port == 6443


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("argv,text,words", [
    (["--config", "/nope/config.yaml"], None, ["/nope/config.yaml", "does not exist"]),
    ([], "bogus-key: 1\n", ["bogus-key", "flag names"]),
    ([], "config: other.yaml\n", ["'config'"]),
    ([], "https-listen-port: [1]\n", ["https-listen-port", "config file"]),
    ([], "- a\n- b\n", ["mapping"]),
    ([], "a: [\n", ["not valid YAML", "line"]),
    ([], "tls-sn: [a]\n", ["did you mean tls-san"]),
])
def test_config_file_errors(tmp_path, argv, text, words):
    if text is not None:
        argv = ["--config", write(tmp_path, text)]
    with pytest.raises(UsageError) as e:
        server_config(argv, {})
    message = str(e.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_unreadable_config_file(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = write(tmp_path, "debug: true\n")
    os.chmod(path, 0)
    with pytest.raises(UsageError, match="permission denied"):
        parse(["--config", path], "server", {})


@pytest.mark.parametrize("argv,words", [
    (["server", "--https-listen-port", "notaport"], ["--https-listen-port", "notaport"]),
    (["server", "--https-listen-port", "70000"], ["1-65535"]),
    (["server", "--no-such-flag"], ["--no-such-flag", "k3py server --help"]),
    (["server", "--https-listn-port", "1"], ["did you mean --https-listen-port"]),
    (["server", "-x"], ["-x"]),
    (["server", "stray"], ["'stray'"]),
    (["server", "--data-dir"], ["needs a value"]),
    (["server", "--cluster-cidr", "nope"], ["--cluster-cidr", "CIDR"]),
    (["server", "--write-kubeconfig-mode", "999"], ["octal"]),
    (["server", "--service-node-port-range", "5-1"], ["LOW-HIGH"]),
    (["server", "--node-taint", "dedicated"], ["Effect"]),
    (["server", "--node-label", "novalue"], ["key=value"]),
    (["agent", "--node-label", "node-role.kubernetes.io/worker=true"],
     ["node-role.kubernetes.io/worker", "NodeRestriction"]),
    (["server", "--disable", "treafik"], ["treafik", "ingress"]),
    (["server", "--advertise-address", "my-host"], ["IP address"]),
    (["server", "--debug=maybe"], ["true or false"]),
    (["server", "--compact-interval", "-1"], [">= 0"]),
    (["server", "--config", "/nope.yaml"], ["/nope.yaml"]),
    (["agent", "--server", "http://srv:6443"], ["https://"]),
    (["agent"], ["--server", "K3PY_URL"]),
    (["agent", "--server", "https://srv:6443"], ["--token", "k3py token"]),
    (["token", "--tls-san", "x"], ["unknown flag --tls-san"]),
    (["no-such-command"], ["unknown command"]),
    ([], ["no command"]),
])
def test_usage_errors_are_one_line_exit_1(capsys, argv, words):
    line = one_error_line(capsys, *argv)
    for word in words:
        assert word in line, line


# ---------------------------------------------------------------- not implemented: refused

REFUSED = [  # (flag, value, words the one line must hold)
    ("disable", "dns", ["--disable dns", "DNS"]),
]


@pytest.mark.parametrize("flag,value,words", REFUSED)
def test_unimplemented_flag_is_refused_from_the_command_line(flag, value, words):
    with pytest.raises(UsageError) as e:
        server_config([f"--{flag}", value], {})
    message = str(e.value)
    assert "does not implement" in message and "command line" in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("flag,value,words", REFUSED)
def test_unimplemented_flag_is_refused_from_the_environment(flag, value, words):
    var = flags.env_name(flag)
    with pytest.raises(UsageError) as e:
        server_config([], {var: value})
    assert f"environment variable {var}" in str(e.value)
    assert ("unset" in str(e.value)) == (flag != "disable")
    for word in words:
        assert word in str(e.value)


@pytest.mark.parametrize("flag,value,words", REFUSED)
def test_unimplemented_flag_is_refused_from_the_config_file(tmp_path, flag, value, words):
    cfg = write(tmp_path, f"{flag}: [{value}]\n" if flag == "disable" else
                f"{flag}: {value}\n")
    with pytest.raises(UsageError) as e:
        server_config(["--config", cfg], {})
    assert f"key {flag!r}" in str(e.value) and f"config file {cfg}" in str(e.value)
    for word in words:
        assert word in str(e.value)


def test_refusal_names_the_source_that_won(tmp_path):
    cfg = write(tmp_path, "disable: [dns]\n")
    env = {"K3PY_CONFIG_FILE": cfg, "K3PY_DISABLE": "dns"}
    with pytest.raises(UsageError, match="environment variable K3PY_DISABLE"):
        server_config([], env)
    with pytest.raises(UsageError, match="from --disable on the command line"):
        server_config(["--disable", "dns"], env)


def test_unimplemented_flags_left_empty_are_fine(tmp_path):
    cfg = write(tmp_path, "datastore-endpoint: \"\"\ndisable: []\n")
    assert server_config(["--config", cfg], {"K3PY_DISABLE": ""}) == ServerConfig()


def test_cluster_cidr_and_node_mask_are_taken_and_checked_together():
    cfg = server_config(["--cluster-cidr", "10.52.0.0/16", "--node-cidr-mask-size", "26"], {})
    assert (cfg.cluster_cidr, cfg.node_cidr_mask_size) == ("10.52.0.0/16", 26)
    assert ServerConfig().cluster_cidr == "10.42.0.0/16"
    for argv, words in ((["--cluster-cidr", "10.52.0.0/25"], ["--cluster-cidr", "/24"]),
                        (["--cluster-cidr", "10.43.0.0/16"], ["overlaps --service-cidr"]),
                        (["--node-cidr-mask-size", "31"], ["8-30"])):
        with pytest.raises(UsageError) as e:
            server_config(argv, {})
        for word in words:
            assert word in str(e.value), str(e.value)


def test_agent_ignores_server_only_keys_of_a_shared_config_file(tmp_path):
    cfg = write(tmp_path, "datastore-endpoint: postgres://db\nserver: https://srv:6443\n")
    assert agent_config(["--config", cfg], {}).server == "https://srv:6443"


def test_disable_typo_is_still_a_bad_value():
    with pytest.raises(UsageError, match="expected components from dashboard, ingress, "
                                         "local-storage, metrics-server, servicelb"):
        server_config(["--disable", "treafik"], {})


def test_disable_traefik_is_k3s_name_of_ingress(tmp_path):
    assert server_config(["--disable", "traefik"], {}).disable == ("ingress",)
    cfg = write(tmp_path, "disable: [traefik, ingress, local-storage]\n")
    assert server_config(["--config", cfg], {}).disable == ("ingress", "local-storage")


def test_ingress_ports_on_server_and_agent(tmp_path):
    assert (ServerConfig().ingress_http_port, ServerConfig().ingress_https_port) == (80, 443)
    config = server_config(["--ingress-http-port", "8080", "--ingress-https-port", "8443"], {})
    assert (config.ingress_http_port, config.ingress_https_port) == (8080, 8443)
    cfg = write(tmp_path, "ingress-http-port: 9080\nserver: https://srv:6443\n")
    assert agent_config(["--config", cfg], {"K3PY_TOKEN": "t"}).ingress_http_port == 9080


def test_disable_metrics_server_and_the_resolution():
    cfg = server_config(["--disable", "metrics-server", "--metrics-resolution", "2s"], {})
    assert cfg.disable == ("metrics-server",) and cfg.metrics_resolution == 2.0
    assert agent_config([], {"K3PY_METRICS_RESOLUTION": "500ms"}).metrics_resolution == 0.5
    with pytest.raises(UsageError, match="duration"):
        agent_config(["--metrics-resolution", "0"], {})


def test_disable_servicelb_turns_its_controller_off():
    config = server_config(["--disable", "servicelb"], {})
    assert config.disable == ("servicelb",)
    assert "ServiceLBController" in disabled_controllers(config)
    assert "ServiceLBController" not in disabled_controllers(server_config([], {}))


def test_disable_local_storage_and_its_path(tmp_path):
    assert server_config(["--disable", "local-storage"], {}).disable == ("local-storage",)
    cfg = write(tmp_path, "disable: [local-storage]\ndefault-local-storage-path: /srv/pv\n")
    config = server_config(["--config", cfg], {})
    assert config.disable == ("local-storage",)
    assert config.default_local_storage_path == "/srv/pv"
    assert server_config([], {"K3PY_DEFAULT_LOCAL_STORAGE_PATH": "/x"}) \
        .default_local_storage_path == "/x"


def test_refusal_through_main_is_one_line_exit_1(capsys):
    line = one_error_line(capsys, "server", "--disable", "dns")
    assert "--disable dns" in line and "remove 'dns'" in line


def test_help_marks_the_refused_flags(capsys):
    _, out, _ = run_main(capsys, "server", "--help")
    refused = [line for line in out.splitlines() if "not implemented yet" in line]
    assert {line.split()[0] for line in refused} == \
        {"--disable"}


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_datastore_endpoint_takes_a_postgres_url(tmp_path, scheme):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    dsn = f"{scheme}://k3s:secret@db.example:5432/k3s?sslmode=verify-full"
    config = server_config(["--datastore-endpoint", dsn, "--datastore-cafile", str(ca)], {})
    assert config.datastore_endpoint == dsn and config.datastore_cafile == str(ca)


def test_datastore_endpoint_other_than_postgres_is_refused_without_its_password():
    with pytest.raises(UsageError) as e:
        server_config(["--datastore-endpoint", "mysql://root:hunter2@tcp(db:3306)/k3s"], {})
    assert "PostgreSQL" in str(e.value) and "hunter2" not in str(e.value)


def test_datastore_tls_file_must_exist(tmp_path):
    with pytest.raises(UsageError, match="--datastore-keyfile.*expected an existing file"):
        server_config(["--datastore-keyfile", str(tmp_path / "missing.key")], {})


def test_bad_env_value_names_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("K3PY_HTTPS_LISTEN_PORT", "x")
    line = one_error_line(capsys, "server")
    assert "K3PY_HTTPS_LISTEN_PORT" in line and "--https-listen-port" in line


def test_agent_token_file(capsys, tmp_path, monkeypatch):
    line = one_error_line(capsys, "agent", "--server", "https://srv:6443", "--token-file",
                          str(tmp_path / "missing"))
    assert "cannot read --token-file" in line
    (tmp_path / "empty").write_text("\n")
    line = one_error_line(capsys, "agent", "-s", "https://srv:6443", "--token-file",
                          str(tmp_path / "empty"))
    assert "is empty" in line


def test_agent_calls_agent_main_run(monkeypatch, tmp_path):
    import types
    seen = {}
    fake = types.ModuleType("k3py.agent.main")
    fake.run = lambda config: seen.setdefault("config", config) and 7
    monkeypatch.setitem(sys.modules, "k3py.agent.main", fake)
    import k3py.agent
    monkeypatch.setattr(k3py.agent, "main", fake, raising=False)
    (tmp_path / "tok").write_text("K10abc::server:s\n")
    code = main(["agent", "--server", "https://srv:6443", "--token-file", str(tmp_path / "tok"),
                 "--node-label", "a=b"])
    assert code == 7
    assert seen["config"].token == "K10abc::server:s"
    assert seen["config"].node_label == ("a=b",)


def test_server_calls_server_main_run(monkeypatch):
    import types
    seen = {}

    def run(config, *, after_ready=None):
        seen.update(config=config, after_ready=after_ready)
        return 0
    fake = types.ModuleType("k3py.server.main")
    fake.run = run
    monkeypatch.setitem(sys.modules, "k3py.server.main", fake)
    import k3py.server
    monkeypatch.setattr(k3py.server, "main", fake, raising=False)
    assert main(["server", "--https-listen-port", "7443", "--disable-agent"]) == 0
    assert seen["config"].https_listen_port == 7443 and seen["after_ready"] is None
    assert main(["server"]) == 0
    assert seen["after_ready"] is not None


def test_damaged_tls_dir_is_one_line(monkeypatch, capsys):
    import types

    from k3py.pki import PkiError

    def run(config, *, after_ready=None):
        raise PkiError("/d/server/tls/server-ca.key is missing while its pair exists; restore it")
    fake = types.ModuleType("k3py.server.main")
    fake.run = run
    monkeypatch.setitem(sys.modules, "k3py.server.main", fake)
    import k3py.server
    monkeypatch.setattr(k3py.server, "main", fake, raising=False)
    assert "server-ca.key is missing" in one_error_line(capsys, "server")


# ---------------------------------------------------------------- version, help, token

def test_version(capsys):
    code, out, _ = run_main(capsys, "--version")
    assert code == 0
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert out == f"k3py version v{__version__} (python {py})\n"


@pytest.mark.parametrize("command", ["server", "agent", "token"])
def test_help_lists_every_flag_with_env_and_default(capsys, command):
    code, out, err = run_main(capsys, command, "--help")
    assert code == 0 and not err
    for flag in flags.flags_for(command):
        assert f"--{flag.name}" in out and f"${flag.env_vars[-1]}" in out
    if command == "server":
        assert "(default: 6443)" in out and "(listener)" in out


def test_token_prints_the_token(capsys, tmp_path):
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "token").write_text("K10abc::server:s3cret\n")
    code, out, _ = run_main(capsys, "token", "--data-dir", str(tmp_path))
    assert code == 0 and out == "K10abc::server:s3cret\n"
    line = one_error_line(capsys, "token", "-d", str(tmp_path / "other"))
    assert "start 'k3py server' first" in line


def test_device_bus_flags_reach_both_agents(tmp_path):
    argv = ["--mqtt-mode", "BOTH", "--mqtt-server", "ssl://broker:8883", "--mqtt-port", "2883",
            "--mqtt-bind", "::1", "--device-offline-after", "500ms"]
    agent = agent_config([*argv, "--server", "https://s:6443", "--token", "t"])
    embedded = AgentConfig.for_node(server_config(argv), server="https://x:6443", token="t")
    for cfg in (agent, embedded):
        assert (cfg.mqtt_mode, cfg.mqtt_server, cfg.mqtt_port, cfg.mqtt_bind,
                cfg.device_offline_after) == ("both", "ssl://broker:8883", 2883, "::1", 0.5)
    assert agent_config([]).mqtt_port == 1883 and agent_config([]).mqtt_bind == "127.0.0.1"


@pytest.mark.parametrize("argv, words", [
    (["--mqtt-mode", "bridge"], "internal, external, both"),
    (["--mqtt-server", "http://x"], "tcp://"),
    (["--mqtt-port", "0"], "1-65535"),
    (["--mqtt-bind", "0.0.0.0"], "loopback only"),
    (["--device-offline-after", "soon"], "duration"),
])
def test_device_bus_flag_errors(argv, words):
    with pytest.raises(UsageError, match=words):
        agent_config(argv)


def test_dual_stack_node_ip_and_cidrs():
    cfg = agent_config(["--node-ip", "10.0.0.2, fd00::2"], environ={})
    assert cfg.node_ip == "10.0.0.2,fd00::2"
    for bad in ("10.0.0.2,10.0.0.3", "fd00::2,fd00::3", "10.0.0.2,fd00::2,10.0.0.4"):
        with pytest.raises(UsageError, match="an IPv4 and an IPv6 address separated by a comma"):
            agent_config(["--node-ip", bad], environ={})
    srv = server_config(["--cluster-cidr", "10.42.0.0/16,2001:cafe:42::/56",
                         "--service-cidr", "10.43.0.0/16,2001:cafe:43::/112"], environ={})
    assert (srv.cluster_dns_ip, srv.kubernetes_service_ip) == ("10.43.0.10", "10.43.0.1")
    with pytest.raises(UsageError, match="must both be single-stack or both dual-stack"):
        server_config(["--cluster-cidr", "10.42.0.0/16,2001:cafe:42::/56"], environ={})
