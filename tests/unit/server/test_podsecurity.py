"""The Pod Security Standards checks (server/podsecurity.py): what baseline and restricted
refuse, in upstream's words, and a pod that meets restricted passing both."""

from __future__ import annotations

import pytest

from k3py.server.podsecurity import check_pod

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
    assert got == [
        "host namespaces (hostNetwork=true)",
        'privileged (container "c" must not set securityContext.privileged=true)',
        'non-default capabilities (container "c" must not include "SYS_ADMIN" in '
        'securityContext.capabilities.add)',
        'hostPath volumes (volume "dev")',
        'hostPort (container "c" uses hostPort)']
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
