"""Pod Security Admission on a real server with kubectl: a namespace labelled
enforce=restricted refuses a privileged pod with upstream's message and admits a compliant
one; warn=baseline lets a hostNetwork Deployment through with kubectl's "Warning: would
violate PodSecurity"; an unlabelled namespace checks nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import ServerProcess

pytestmark = pytest.mark.integration


def _pod(name: str, **spec) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}})


def test_enforce_warn_and_unlabelled(tmp_path: Path):
    srv = ServerProcess(tmp_path / "srv").start()
    try:
        srv.kubectl("create", "namespace", "locked")
        srv.kubectl("label", "namespace", "locked",
                    "pod-security.kubernetes.io/enforce=restricted")
        privileged = _pod("root", containers=[{"name": "c", "image": "busybox",
                                               "securityContext": {"privileged": True}}])
        out = srv.kubectl("apply", "-n", "locked", "-f", "-", input=privileged, check=False)
        assert out.returncode != 0
        assert 'violates PodSecurity "restricted:latest": privileged (container "c" must ' \
               'not set securityContext.privileged=true)' in out.stderr, out.stderr
        compliant = _pod("ok", securityContext={
            "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            containers=[{"name": "c", "image": "busybox", "securityContext": {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}])
        srv.kubectl("apply", "-n", "locked", "-f", "-", input=compliant)

        srv.kubectl("create", "namespace", "watched")
        srv.kubectl("label", "namespace", "watched", "pod-security.kubernetes.io/warn=baseline")
        out = srv.kubectl("create", "deployment", "web", "-n", "watched", "--image=busybox",
                          "--dry-run=client", "-o", "json")
        dep = json.loads(out.stdout)
        dep["spec"]["template"]["spec"]["hostNetwork"] = True
        out = srv.kubectl("apply", "-n", "watched", "-f", "-", input=json.dumps(dep))
        assert 'Warning: would violate PodSecurity "baseline:latest": host namespaces ' \
               '(hostNetwork=true)' in out.stderr, out.stderr

        srv.kubectl("apply", "-f", "-", input=privileged)  # default: unlabelled, privileged
    finally:
        srv.stop()
