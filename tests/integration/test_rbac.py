"""RBAC against a real server (no agent): per identity (the admin, alice with a Role in
"team", a service account unbound and one bound to view, anonymous, the join token, a forged
JWT, a client certificate of another cluster's CA) a table of requests and the status each
gets; a deleted service account's token refused; escalation refused; `kubectl auth can-i`, `can-i --list` and
`auth whoami` for each; `kubectl --as` checked with the impersonate verb; a ClusterRole
labelled aggregate-to-view extending view at once.

Users are client certificates signed by the server's client CA (as the admin kubeconfig's);
service accounts use `kubectl create token`."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from k3py import pki
from tests.harness import KUBECTL, ServerProcess, wait_for

pytestmark = pytest.mark.integration

_TLS_FILES = {"ca_cert_pem": "server-ca.crt", "ca_key_pem": "server-ca.key",
              "client_ca_cert_pem": "client-ca.crt", "client_ca_key_pem": "client-ca.key",
              "serving_cert_pem": "serving-kube-apiserver.crt",
              "serving_key_pem": "serving-kube-apiserver.key",
              "admin_cert_pem": "client-admin.crt", "admin_key_pem": "client-admin.key",
              "sa_key_pem": "service.key", "sa_pub_pem": "service.pub"}

SETUP = """
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: developer, namespace: team}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [configmaps], verbs: [get, create]}
- {apiGroups: [rbac.authorization.k8s.io], resources: [roles, rolebindings], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-developer, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: developer}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: unbound, namespace: team}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: bound, namespace: team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: bound-view, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: ServiceAccount, name: bound, namespace: team}]
"""


@dataclass
class Identity:
    """How one identity talks to the server: a kubeconfig for kubectl, and the same
    credential for raw HTTP."""
    kubeconfig: Path
    cert: tuple[str, str] | None = None
    token: str = ""


def _client_ca(srv: ServerProcess) -> pki.Pki:
    tls = srv.data_dir / "server" / "tls"
    return pki.Pki(tls_dir=str(tls), **{k: (tls / f).read_bytes() for k, f in
                                        _TLS_FILES.items()})


def _kubeconfig(srv: ServerProcess, path: Path, user: dict) -> Path:
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
           "clusters": [{"name": "c", "cluster": {
               "server": srv.url, "certificate-authority": str(
                   srv.data_dir / "server" / "tls" / "server-ca.crt")}}],
           "users": [{"name": "u", "user": user}],
           "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}
    path.write_text(json.dumps(cfg))
    return path


def _user(srv: ServerProcess, tmp: Path, cn: str, *orgs: str) -> Identity:
    cert, key = _client_ca(srv).issue_client_cert(cn, orgs)
    cert_path, key_path = tmp / f"{cn}.crt", tmp / f"{cn}.key"
    cert_path.write_bytes(cert)
    key_path.write_bytes(key)
    user = {"client-certificate": str(cert_path), "client-key": str(key_path)}
    return Identity(_kubeconfig(srv, tmp / f"{cn}.kubeconfig", user),
                    cert=(str(cert_path), str(key_path)))


def _service_account(srv: ServerProcess, tmp: Path, name: str) -> Identity:
    token = srv.kubectl("create", "token", name, "-n", "team").stdout.strip()
    return Identity(_kubeconfig(srv, tmp / f"sa-{name}.kubeconfig", {"token": token}),
                    token=token)


def _foreign_admin(tls_dir: Path) -> Identity:
    """system:masters, signed by another cluster's client CA."""
    other = pki.ensure_pki(str(tls_dir), sans=[], ips=[])
    return Identity(Path("/dev/null"), cert=(other.admin_cert_path, other.admin_key_path))


def _forged(token: str) -> str:
    """`token` with its subject changed to another account (the signature left as it was)."""
    header, claims, sig = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    body["sub"] = "system:serviceaccount:kube-system:admin"
    return ".".join([header, base64.urlsafe_b64encode(json.dumps(body).encode()).decode()
                     .rstrip("="), sig])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rbac")
    srv = ServerProcess(tmp / "srv").start()
    try:
        srv.kubectl("apply", "-f", "-", input=SETUP)
        tls = srv.data_dir / "server" / "tls"
        ids = {"admin": Identity(srv.kubeconfig, cert=(str(tls / "client-admin.crt"),
                                                       str(tls / "client-admin.key"))),
               "alice": _user(srv, tmp, "alice", "dev"),
               "unbound": _service_account(srv, tmp, "unbound"),
               "bound": _service_account(srv, tmp, "bound"),
               "anonymous": Identity(_kubeconfig(srv, tmp / "anon.kubeconfig", {})),
               "join-token": Identity(Path("/dev/null"), token=srv.join_token()),
               "foreign-ca": _foreign_admin(tmp / "foreign")}
        # view's rules arrive through the aggregation controller
        wait_for(lambda: kubectl(ids["bound"], "auth", "can-i", "list", "pods", "-n",
                                 "team").stdout.strip() == "yes", 30, 0.2,
                 "view aggregated and bound")
        ids["forged-jwt"] = Identity(Path("/dev/null"), token=_forged(ids["bound"].token))
        yield srv, ids
    finally:
        srv.stop()


def kubectl(who: Identity, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KUBECTL, "--kubeconfig", str(who.kubeconfig), *args],
                          capture_output=True, text=True, timeout=60)


def request(srv: ServerProcess, who: Identity, method: str, path: str,
            body: dict | None = None) -> int:
    ctx = ssl.create_default_context(cafile=str(srv.data_dir / "server" / "tls" /
                                                "server-ca.crt"))
    ctx.check_hostname = False
    if who.cert:
        ctx.load_cert_chain(*who.cert)
    hdrs = {"Content-Type": "application/json"}
    if who.token:
        hdrs["Authorization"] = f"Bearer {who.token}"
    req = urllib.request.Request(srv.url + path, method=method, headers=hdrs,
                                 data=json.dumps(body).encode() if body else None)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, http.client.RemoteDisconnected) as e:
        if isinstance(e, http.client.RemoteDisconnected) or isinstance(e.reason, ssl.SSLError):
            return 0  # refused in the TLS handshake (TLS 1.3: seen as the first read)
        raise


_TEAM = "/api/v1/namespaces/team"
_RULES_REVIEW = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
_SSAR = {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
         "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}}

TABLE = [
    # admin (system:masters, bound to cluster-admin)
    ("admin", "GET", "/api/v1/secrets", 200),
    ("admin", "GET", "/apis", 200),
    ("admin", "GET", "/metrics", 404),
    ("admin", "DELETE", f"{_TEAM}/pods/none", 404),
    # alice: her Role in team, and the defaults every authenticated user has
    ("alice", "GET", f"{_TEAM}/pods", 200),
    ("alice", "POST", f"{_TEAM}/configmaps", 201),
    ("alice", "GET", f"{_TEAM}/secrets", 403),
    ("alice", "DELETE", f"{_TEAM}/pods/none", 403),
    ("alice", "GET", "/api/v1/namespaces/default/pods", 403),
    ("alice", "GET", "/api/v1/nodes", 403),
    ("alice", "GET", "/api", 200),
    ("alice", "GET", "/api/v1", 200),
    ("alice", "GET", "/apis/apps", 200),
    ("alice", "GET", "/openapi/v2", 200),
    ("alice", "GET", "/version", 200),
    ("alice", "GET", "/metrics", 403),
    ("alice", "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", 201),
    ("alice", "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", 403),
    # a service account with no binding: basic-user, discovery, public-info-viewer only
    ("unbound", "GET", f"{_TEAM}/pods", 403),
    ("unbound", "GET", f"{_TEAM}/configmaps", 403),
    ("unbound", "POST", f"{_TEAM}/configmaps", 403),
    ("unbound", "GET", "/apis", 200),
    ("unbound", "GET", "/version", 200),
    ("unbound", "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", 201),
    # bound to view in team
    ("bound", "GET", f"{_TEAM}/pods", 200),
    ("bound", "GET", f"{_TEAM}/configmaps", 200),
    ("bound", "GET", f"{_TEAM}/secrets", 403),
    ("bound", "POST", f"{_TEAM}/configmaps", 403),
    ("bound", "GET", "/api/v1/namespaces/default/pods", 403),
    # anonymous: health and version only
    ("anonymous", "GET", "/version", 200),
    ("anonymous", "GET", "/healthz", 200),
    ("anonymous", "GET", "/apis", 401),
    ("anonymous", "GET", f"{_TEAM}/pods", 401),
    # the join token is for joining only; a JWT with a changed subject; a client certificate
    # of another cluster's CA (refused in the handshake: it is not this cluster's)
    ("join-token", "GET", "/apis", 401),
    ("join-token", "GET", f"{_TEAM}/pods", 401),
    ("forged-jwt", "GET", "/apis", 401),
    ("forged-jwt", "GET", "/api/v1/secrets", 401),
    ("foreign-ca", "GET", "/api/v1/secrets", 0),
]


@pytest.mark.parametrize("who,method,path,status", TABLE,
                         ids=[f"{w}-{m}-{p}" for w, m, p, _ in TABLE])
def test_request_table(cluster, who, method, path, status):
    srv, ids = cluster
    body = None
    if method == "POST":
        body = _SSAR if "accessreviews" in path else \
            {"metadata": {"name": f"made-by-{who}"}, "data": {"k": "v"}}
        if path.endswith("/subjectaccessreviews"):
            body = {**_SSAR, "kind": "SubjectAccessReview",
                    "spec": {**_SSAR["spec"], "user": "bob"}}
    assert request(srv, ids[who], method, path, body) == status


def test_escalation_refused(cluster):
    srv, ids = cluster
    alice = ids["alice"]
    ok = kubectl(alice, "create", "role", "pod-peeker", "-n", "team", "--verb=get",
                 "--resource=pods")
    assert ok.returncode == 0, ok.stderr
    out = kubectl(alice, "create", "role", "secret-peeker", "-n", "team", "--verb=get",
                  "--resource=secrets")
    assert out.returncode != 0
    assert 'roles.rbac.authorization.k8s.io "secret-peeker" is forbidden: user "alice" ' \
        '(groups=["dev" "system:authenticated"]) is attempting to grant RBAC permissions ' \
        'not currently held:\n{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}' \
        in out.stderr
    out = kubectl(alice, "create", "rolebinding", "alice-admin", "-n", "team",
                  "--clusterrole=admin", "--user=alice")
    assert out.returncode != 0 and "is attempting to grant RBAC permissions" in out.stderr
    ok = kubectl(alice, "create", "rolebinding", "peekers", "-n", "team", "--role=pod-peeker",
                 "--user=carol")
    assert ok.returncode == 0, ok.stderr


def _can_i_list(who: Identity, ns: str = "team") -> list[list[str]]:
    out = kubectl(who, "auth", "can-i", "--list", "-n", ns)
    assert out.returncode == 0, out.stderr
    return [line.split() for line in out.stdout.splitlines()[1:]]


def test_can_i_list_per_identity(cluster):
    _, ids = cluster
    admin = _can_i_list(ids["admin"])
    assert ["*.*", "[]", "[]", "[*]"] in admin and ["[*]", "[]", "[*]"] in admin
    alice = _can_i_list(ids["alice"])
    assert ["pods", "[]", "[]", "[get", "list", "watch]"] in alice
    assert ["configmaps", "[]", "[]", "[get", "create]"] in alice
    assert ["selfsubjectaccessreviews.authorization.k8s.io", "[]", "[]", "[create]"] in alice
    assert ["[/apis/*]", "[]", "[get]"] in alice
    unbound = _can_i_list(ids["unbound"])
    assert {row[0] for row in unbound if not row[0].startswith("[")} == {
        "selfsubjectreviews.authentication.k8s.io",
        "selfsubjectaccessreviews.authorization.k8s.io",
        "selfsubjectrulesreviews.authorization.k8s.io"}
    bound = _can_i_list(ids["bound"])
    assert ["pods", "[]", "[]", "[get", "list", "watch]"] in bound
    assert not any(row[0] == "secrets" for row in bound)
    assert ["[/version]", "[]", "[get]"] in _can_i_list(ids["bound"], "default")
    # anonymous (kubectl would prompt for a username): what `--list` sends is refused
    review = {"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1",
              "spec": {"namespace": "team"}}
    assert request(cluster[0], ids["anonymous"], "POST", _RULES_REVIEW, review) == 401


def test_can_i_whoami_and_impersonation(cluster):
    _, ids = cluster
    admin, alice = ids["admin"], ids["alice"]

    def can_i(who: Identity, *args: str) -> str:
        return kubectl(who, "auth", "can-i", *args).stdout.strip()
    assert can_i(alice, "list", "pods", "-n", "team") == "yes"
    assert can_i(alice, "list", "pods", "-n", "default") == "no"
    assert can_i(alice, "get", "/version") == "yes"
    assert can_i(alice, "get", "/metrics") == "no"
    assert can_i(admin, "list", "pods", "-n", "team", "--as", "alice") == "yes"
    assert can_i(admin, "delete", "pods", "-n", "team", "--as", "alice") == "no"
    assert can_i(admin, "list", "pods", "-n", "team",
                 "--as", "system:serviceaccount:team:unbound") == "no"
    who = kubectl(alice, "auth", "whoami", "-o", "json")
    assert json.loads(who.stdout)["status"]["userInfo"] == {
        "username": "alice", "groups": ["dev", "system:authenticated"]}
    sa = json.loads(kubectl(ids["bound"], "auth", "whoami", "-o", "json").stdout)
    assert sa["status"]["userInfo"]["username"] == "system:serviceaccount:team:bound"
    assert "system:serviceaccounts:team" in sa["status"]["userInfo"]["groups"]
    as_bob = json.loads(kubectl(admin, "auth", "whoami", "-o", "json", "--as", "bob",
                                "--as-group", "qa", "--as-uid", "42").stdout)
    assert as_bob["status"]["userInfo"] == {"username": "bob", "uid": "42",
                                            "groups": ["qa", "system:authenticated"]}
    out = kubectl(admin, "get", "pods", "-n", "default", "--as", "alice")
    assert out.returncode != 0 and 'User "alice" cannot list resource "pods"' in out.stderr
    out = kubectl(alice, "get", "pods", "-n", "team", "--as", "bob")
    assert out.returncode != 0 and 'users "bob" is forbidden: User "alice" cannot ' \
        'impersonate resource "users" in API group "" at the cluster scope' in out.stderr
    # anyone edit-bound may impersonate its namespace's service accounts (upstream's edit)
    srv = cluster[0]
    srv.kubectl("create", "rolebinding", "alice-edit", "-n", "team", "--clusterrole=edit",
                "--user=alice")
    wait_for(lambda: can_i(alice, "impersonate", "serviceaccounts", "-n", "team") == "yes",
             10, 0.2, "alice's edit binding")
    out = kubectl(alice, "get", "pods", "-n", "team", "--as",
                  "system:serviceaccount:team:bound")
    assert out.returncode == 0, out.stderr


def test_aggregate_to_view_extends_view(cluster):
    srv, ids = cluster
    bound = ids["bound"]
    assert kubectl(bound, "auth", "can-i", "list", "leases", "-n", "team").stdout.strip() \
        == "no"
    srv.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "leases-view", "labels": {
            "rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                   "verbs": ["get", "list"]}]}))
    wait_for(lambda: kubectl(bound, "auth", "can-i", "list", "leases", "-n", "team"
                             ).stdout.strip() == "yes", 10, 0.2, "view extended with leases")
    names = srv.kubectl("get", "clusterroles", "-o", "name").stdout.split()
    for name in ("cluster-admin", "admin", "edit", "view", "system:discovery",
                 "system:basic-user", "system:public-info-viewer", "system:node"):
        assert f"clusterrole.rbac.authorization.k8s.io/{name}" in names


def test_a_deleted_service_account_token_stops_authenticating(cluster):
    srv, _ = cluster
    srv.kubectl("create", "serviceaccount", "brief", "-n", "team")
    token = srv.kubectl("create", "token", "brief", "-n", "team").stdout.strip()
    who = Identity(Path("/dev/null"), token=token)  # raw HTTP only
    wait_for(lambda: request(srv, who, "GET", "/apis") == 200, 10, 0.1,
             "the new account's token authenticating")
    srv.kubectl("delete", "serviceaccount", "brief", "-n", "team")
    wait_for(lambda: request(srv, who, "GET", "/apis") == 401, 10, 0.1,
             "the deleted account's token refused")
