"""Pod Security Admission on a real server with kubectl: a namespace labelled
enforce=restricted refuses a privileged pod with upstream's message and admits a compliant
one; warn=baseline lets a hostNetwork Deployment through with kubectl's "Warning: would
violate PodSecurity", and warns again when an update changes the template (not on a scale);
a pod update that changes an image is judged again, a label change is not. The server runs
with --pod-security-admission-config-file (upstream's AdmissionConfiguration): unlabelled
namespaces get its default level (baseline), an exempt namespace or a privileged label none.
Labelling a namespace with a stricter enforce level warns with the existing pods that
violate it, in upstream's words (also on a server-side dry run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import ServerProcess

pytestmark = pytest.mark.integration

ADMISSION_CONFIG = """apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults:
      enforce: baseline
      enforce-version: latest
    exemptions:
      namespaces: [kube-system, free]
"""


def _pod(name: str, **spec) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}})


PRIVILEGED = _pod("root", containers=[{"name": "c", "image": "busybox",
                                       "securityContext": {"privileged": True}}])


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp: Path = tmp_path_factory.mktemp("psa")
    (tmp / "admission.yaml").write_text(ADMISSION_CONFIG)
    server = ServerProcess(tmp / "srv", extra_args=[
        "--pod-security-admission-config-file", str(tmp / "admission.yaml")])
    try:
        yield server.start()
    finally:
        server.stop()


def test_enforce_and_warn_by_namespace_labels(srv):
    srv.kubectl("create", "namespace", "locked")
    srv.kubectl("label", "namespace", "locked", "pod-security.kubernetes.io/enforce=restricted")
    out = srv.kubectl("apply", "-n", "locked", "-f", "-", input=PRIVILEGED, check=False)
    assert out.returncode != 0
    assert 'violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false ' \
           '(container "c" must set securityContext.allowPrivilegeEscalation=false), ' \
           'unrestricted capabilities (container "c" must set ' \
           'securityContext.capabilities.drop=["ALL"]), privileged (container "c" must ' \
           'not set securityContext.privileged=true)' in out.stderr, out.stderr
    compliant = _pod("ok", securityContext={
        "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        containers=[{"name": "c", "image": "busybox", "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}])
    srv.kubectl("apply", "-n", "locked", "-f", "-", input=compliant)

    srv.kubectl("create", "namespace", "watched")
    srv.kubectl("label", "namespace", "watched", "pod-security.kubernetes.io/warn=baseline",
                "pod-security.kubernetes.io/enforce=privileged")
    out = srv.kubectl("create", "deployment", "web", "-n", "watched", "--image=busybox",
                      "--dry-run=client", "-o", "json")
    dep = json.loads(out.stdout)
    dep["spec"]["template"]["spec"]["hostNetwork"] = True
    out = srv.kubectl("apply", "-n", "watched", "-f", "-", input=json.dumps(dep))
    assert 'Warning: would violate PodSecurity "baseline:latest": host namespaces ' \
           '(hostNetwork=true)' in out.stderr, out.stderr
    # an update: judged again when the template changes, not when only replicas do
    dep["spec"]["template"]["spec"]["hostPID"] = True
    out = srv.kubectl("apply", "-n", "watched", "-f", "-", input=json.dumps(dep))
    assert "(hostNetwork=true, hostPID=true)" in out.stderr, out.stderr
    out = srv.kubectl("scale", "deployment", "web", "-n", "watched", "--replicas=2")
    assert "PodSecurity" not in out.stderr, out.stderr


def test_cluster_default_and_exemptions_from_the_config_file(srv):
    out = srv.kubectl("apply", "-f", "-", input=PRIVILEGED, check=False)  # unlabelled
    assert out.returncode != 0
    assert 'violates PodSecurity "baseline:latest": privileged' in out.stderr, out.stderr
    srv.kubectl("create", "namespace", "free")  # exempt by the file
    srv.kubectl("apply", "-n", "free", "-f", "-", input=PRIVILEGED)
    srv.kubectl("create", "namespace", "open")
    srv.kubectl("label", "namespace", "open", "pod-security.kubernetes.io/enforce=privileged")
    srv.kubectl("apply", "-n", "open", "-f", "-", input=PRIVILEGED)


def test_pod_updates_are_judged_when_an_image_changes(srv):
    srv.kubectl("create", "namespace", "later")
    srv.kubectl("label", "namespace", "later", "pod-security.kubernetes.io/enforce=privileged")
    srv.kubectl("apply", "-n", "later", "-f", "-", input=PRIVILEGED)
    srv.kubectl("label", "namespace", "later", "--overwrite",
                "pod-security.kubernetes.io/enforce=baseline")
    srv.kubectl("label", "pod", "root", "-n", "later", "tier=old")  # not significant
    out = srv.kubectl("set", "image", "pod/root", "-n", "later", "c=busybox:1.36", check=False)
    assert out.returncode != 0
    assert 'violates PodSecurity "baseline:latest": privileged' in out.stderr, out.stderr


def test_a_stricter_enforce_label_warns_of_existing_pods(srv):
    srv.kubectl("create", "namespace", "legacy")
    srv.kubectl("label", "namespace", "legacy", "pod-security.kubernetes.io/enforce=privileged")
    for name in ("root-b", "root-a", "root-c"):
        srv.kubectl("apply", "-n", "legacy", "-f", "-",
                    input=PRIVILEGED.replace('"root"', f'"{name}"'))
    srv.kubectl("apply", "-n", "legacy", "-f", "-", input=_pod("hostnet", hostNetwork=True))
    out = srv.kubectl("label", "namespace", "legacy", "--overwrite", "--dry-run=server",
                      "pod-security.kubernetes.io/enforce=baseline")
    assert out.stderr.splitlines() == [
        'Warning: existing pods in namespace "legacy" violate the new PodSecurity enforce '
        'level "baseline:latest"',
        "Warning: hostnet: host namespaces",
        "Warning: root-a (and 2 other pods): privileged"], out.stderr
    assert "(server dry run)" in out.stdout
    out = srv.kubectl("label", "namespace", "legacy", "--overwrite",
                      "pod-security.kubernetes.io/enforce=restricted")
    # the violations in upstream's order (by its check IDs)
    assert out.stderr.splitlines()[1:] == [
        "Warning: hostnet: allowPrivilegeEscalation != false, unrestricted capabilities, host "
        "namespaces, runAsNonRoot != true, seccompProfile",
        "Warning: root-a (and 2 other pods): allowPrivilegeEscalation != false, unrestricted "
        "capabilities, privileged, runAsNonRoot != true, seccompProfile"], out.stderr
    # the same level again, or a laxer one, says nothing
    out = srv.kubectl("label", "namespace", "legacy", "tier=old")
    assert "Warning" not in out.stderr, out.stderr
    out = srv.kubectl("label", "namespace", "legacy", "--overwrite",
                      "pod-security.kubernetes.io/enforce=privileged")
    assert "Warning" not in out.stderr, out.stderr
