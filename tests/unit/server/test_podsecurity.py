"""The Pod Security Standards checks (server/podsecurity.py): what baseline and restricted
refuse, in upstream's words, and a pod that meets restricted passing both; the cluster-wide
configuration file read as upstream's AdmissionConfiguration."""

from __future__ import annotations

import pytest

from k3py.server.configfile import ConfigError
from k3py.server.podsecurity import PodSecurityConfig, check_pod, existing_pod_warnings

pytestmark = pytest.mark.unit

RESTRICTED_OK = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "c", "image": "busybox", "securityContext": {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
    "volumes": [{"name": "cfg", "configMap": {"name": "x"}}]}


def test_a_restricted_pod_passes_every_level():
    for level in ("privileged", "baseline", "restricted"):
        assert check_pod(level, RESTRICTED_OK) == [], level


def test_baseline_refuses_host_access_and_privileges():
    spec = {"hostNetwork": True, "volumes": [{"name": "dev", "hostPath": {"path": "/dev"}}],
            "containers": [{"name": "c", "securityContext": {
                "privileged": True, "capabilities": {"add": ["SYS_ADMIN", "CHOWN"]}},
                "ports": [{"containerPort": 80, "hostPort": 80}]}]}
    got = check_pod("baseline", spec)
    assert got == [  # in the order of upstream's check IDs
        'non-default capabilities (container "c" must not include "SYS_ADMIN" in '
        'securityContext.capabilities.add)',
        "host namespaces (hostNetwork=true)",
        'hostPath volumes (volume "dev")',
        'hostPort (container "c" uses hostPort)',
        'privileged (container "c" must not set securityContext.privileged=true)']
    assert check_pod("privileged", spec) == []


def test_restricted_adds_its_own_rules():
    spec = {"containers": [{"name": "a"}, {"name": "b", "securityContext": {"runAsUser": 0}}]}
    got = check_pod("restricted", spec)
    assert 'allowPrivilegeEscalation != false (containers "a", "b" must set ' \
           'securityContext.allowPrivilegeEscalation=false)' in got
    assert 'unrestricted capabilities (containers "a", "b" must set ' \
           'securityContext.capabilities.drop=["ALL"])' in got
    assert any(g.startswith("runAsNonRoot != true") for g in got)
    assert "runAsUser=0 (pod and containers must not set runAsUser=0)" in got
    assert any(g.startswith("seccompProfile (pod or containers") for g in got)
    assert check_pod("baseline", spec) == []


_PLUGIN = """apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: EventRateLimit
  path: eventconfig.yaml
- name: PodSecurity
  {how}
"""
_CONF = """apiVersion: pod-security.admission.config.k8s.io/v1
kind: PodSecurityConfiguration
defaults: {enforce: restricted, enforce-version: latest, audit: baseline, warn: restricted}
exemptions: {usernames: [admin], runtimeClasses: [kata], namespaces: [kube-system]}
"""


def test_admission_configuration_inline_or_by_path(tmp_path):
    inline = tmp_path / "inline.yaml"
    inline.write_text(_PLUGIN.format(how="configuration:\n" + "".join(
        "    " + line + "\n" for line in _CONF.splitlines())))
    (tmp_path / "psa.yaml").write_text(_CONF)
    by_path = tmp_path / "by_path.yaml"
    by_path.write_text(_PLUGIN.format(how="path: psa.yaml"))
    for f in (inline, by_path):
        cfg = PodSecurityConfig.load(str(f))
        assert cfg.defaults == {"enforce": "restricted", "audit": "baseline",
                                "warn": "restricted"}
        assert (cfg.exempt_usernames, cfg.exempt_runtime_classes, cfg.exempt_namespaces) == \
            ({"admin"}, {"kata"}, {"kube-system"})


@pytest.mark.parametrize("text, words", [
    ("kind: PodSecurityConfiguration\n", "want kind AdmissionConfiguration"),
    ("kind: AdmissionConfiguration\nplugins: []\n", "no plug-in named PodSecurity"),
    (_PLUGIN.format(how="configuration: {kind: PodSecurityConfiguration, defaults: "
                        "{enforce: strict}}"), "defaults.enforce must be one of"),
    (_PLUGIN.format(how="configuration: {kind: PodSecurityConfiguration, defaults: "
                        "{block: baseline}}"), "unknown defaults key 'block'"),
    ("[", "is not YAML"),
])
def test_a_wrong_configuration_says_what_is_wrong(tmp_path, text, words):
    f = tmp_path / "a.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=words):
        PodSecurityConfig.load(str(f))


def test_existing_pod_warnings_group_pods_by_violation():
    def pod(name: str, **spec) -> dict:
        return {"metadata": {"name": name}, "spec": {"containers": [{"name": "c"}], **spec}}
    # grouped by the violations' reasons, without their details, as upstream
    pods = [pod("b", hostPID=True), pod("a", hostPID=True), pod("ok"), pod("c", hostIPC=True),
            pod("d", hostPID=True, volumes=[{"name": "v", "hostPath": {"path": "/"}}])]
    assert existing_pod_warnings("ns", "baseline", pods) == [
        'existing pods in namespace "ns" violate the new PodSecurity enforce level '
        '"baseline:latest"',
        "a (and 2 other pods): host namespaces",
        "d: host namespaces, hostPath volumes"]
    assert existing_pod_warnings("ns", "baseline", pods[:3])[1] == \
        "a (and 1 other pod): host namespaces"
    assert existing_pod_warnings("ns", "baseline", [pod("ok")]) == []
