"""Per-kind validation: upstream field paths, types and messages (the 422 kubectl shows)."""

import pytest

from k3py.api import errors, kinds
from k3py.api.resources import builtin_registry

pytestmark = pytest.mark.unit
REG = builtin_registry()


def _causes(group: str, plural: str, obj: dict, old: dict | None = None) -> list[dict]:
    res = REG.find(group, plural)
    kinds.default(res, obj, old)
    return kinds.validate(res, obj, old)


def _deploy(sel: dict | None, labels: dict, replicas: int = 1) -> dict:
    return {"metadata": {"name": "web"}, "spec": {
        "replicas": replicas, "selector": sel, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}


def test_bad_names():
    [c] = _causes("", "configmaps", {"metadata": {"name": "Bad_Name"}})
    assert c["field"] == "metadata.name" and c["type"] == "FieldValueInvalid"
    assert c["message"] == (
        'Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case '
        "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
        "character (e.g. 'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
    [c] = _causes("", "namespaces", {"metadata": {"name": "a.b"}})
    assert "a lowercase RFC 1123 label must consist" in c["message"]
    svc = {"metadata": {"name": "1web"}, "spec": {"ports": [{"port": 80}]}}
    assert "a DNS-1035 label must consist" in _causes("", "services", svc)[0]["message"]
    # RBAC names are path segments: any characters but '/' and '%', of bounded length
    # (our own bound: the datastore's key index holds keys of up to 2 kB)
    assert not _causes("rbac.authorization.k8s.io", "clusterroles",
                       {"metadata": {"name": "system:Any name"}})
    [c] = _causes("rbac.authorization.k8s.io", "clusterroles", {"metadata": {"name": "x" * 1025}})
    assert c["field"] == "metadata.name" and "no more than 1024 bytes" in c["message"]


def test_labels_and_annotations():
    causes = _causes("", "configmaps", {"metadata": {"name": "x", "labels": {"a/b/c": "v"},
                                                     "annotations": {"-x": "1"}}})
    assert [c["field"] for c in causes] == ["metadata.labels", "metadata.annotations"]
    assert causes[0]["message"].startswith('Invalid value: "a/b/c": a qualified name must')


def test_selector_mismatch_matches_upstream_message():
    [c] = _causes("apps", "deployments", _deploy({"matchLabels": {"app": "a"}}, {"app": "b"}))
    assert c == {"type": "FieldValueInvalid", "field": "spec.template.metadata.labels",
                 "message": 'Invalid value: map[string]string{"app":"b"}: `selector` does not '
                            "match template `labels`"}
    err = errors.invalid("apps", "Deployment", "web", [c])
    assert err.message == ('Deployment.apps "web" is invalid: spec.template.metadata.labels: '
                           'Invalid value: map[string]string{"app":"b"}: `selector` does not '
                           "match template `labels`")


def test_replicas_and_required_selector():
    causes = _causes("apps", "deployments", _deploy(None, {"app": "a"}, replicas=-1))
    msgs = {c["field"]: c["message"] for c in causes}
    assert msgs["spec.replicas"] == "Invalid value: -1: must be greater than or equal to 0"
    assert msgs["spec.selector"] == "Required value"
    empty = _causes("apps", "replicasets", _deploy({}, {"app": "a"}))
    assert "empty selector is invalid for deployment" in empty[0]["message"]


def test_selector_is_immutable():
    old = _deploy({"matchLabels": {"app": "a"}}, {"app": "a", "v": "1"})
    new = _deploy({"matchLabels": {"app": "a", "v": "1"}}, {"app": "a", "v": "1"})
    [c] = _causes("apps", "deployments", new, old)
    assert c["field"] == "spec.selector" and c["message"].endswith("field is immutable")
    assert c["message"].startswith('Invalid value: v1.LabelSelector{MatchLabels:map[string]'
                                   'string{"app":"a", "v":"1"}')


def test_pod_validation():
    pod = {"metadata": {"name": "p"}, "spec": {"restartPolicy": "Sometimes", "containers": [
        {"name": "c", "image": "nginx", "ports": [{"containerPort": 70000}],
         "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
        {"name": "c"}]}}
    msgs = {c["field"]: c["message"] for c in _causes("", "pods", pod)}
    assert msgs["spec.restartPolicy"] == ('Unsupported value: "Sometimes": supported values: '
                                          '"Always", "OnFailure", "Never"')
    assert msgs["spec.containers[0].ports[0].containerPort"] == (
        "Invalid value: 70000: must be between 1 and 65535, inclusive")
    assert msgs["spec.containers[0].resources.requests"] == (
        'Invalid value: "2": must be less than or equal to cpu limit of 1')
    assert msgs["spec.containers[1].name"] == 'Duplicate value: "c"'
    assert msgs["spec.containers[1].image"] == "Required value"
    assert _causes("", "pods", {"metadata": {"name": "p"}, "spec": {}})[0] == {
        "type": "FieldValueRequired", "field": "spec.containers", "message": "Required value"}


def test_pod_update_only_image_may_change():
    old = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a"}]}}
    _causes("", "pods", old)
    new = {"metadata": {"name": "p"}, "spec": {**old["spec"], "containers": [
        {**old["spec"]["containers"][0], "image": "b"}]}}
    assert _causes("", "pods", new, old) == []
    bad = {"metadata": {"name": "p"}, "spec": {**old["spec"], "restartPolicy": "Never"}}
    [c] = _causes("", "pods", bad, old)
    assert c["type"] == "FieldValueForbidden" and c["field"] == "spec"
    assert c["message"].startswith("Forbidden: pod updates may not change fields other than "
                                   "`spec.containers[*].image`")


def test_job_restart_policy_defaults_to_always_and_is_rejected():
    job = {"metadata": {"name": "j", "uid": "u"}, "spec": {"template": {"spec": {
        "containers": [{"name": "c", "image": "busybox"}]}}}}
    [c] = _causes("batch", "jobs", job)
    assert c["field"] == "spec.template.spec.restartPolicy"
    assert c["message"] == ('Unsupported value: "Always": supported values: "OnFailure", '
                            '"Never"')


def test_service_validation():
    svc = {"metadata": {"name": "s"}, "spec": {"type": "Weird", "ports": [
        {"port": 80}, {"port": 0, "name": "b", "nodePort": 30000}]}}
    msgs = {c["field"]: c["message"] for c in _causes("", "services", svc)}
    assert msgs["spec.type"] == ('Unsupported value: "Weird": supported values: "ClusterIP", '
                                 '"ExternalName", "LoadBalancer", "NodePort"')
    assert msgs["spec.ports[0].name"] == "Required value"
    assert msgs["spec.ports[1].port"] == ("Invalid value: 0: must be between 1 and 65535, "
                                          "inclusive")
    np = {"metadata": {"name": "s"}, "spec": {"type": "NodePort", "ports": [
        {"port": 80, "nodePort": 80}]}}
    [c] = _causes("", "services", np)
    assert c["message"].endswith("The range of valid ports is 30000-32767")


def test_configmap_keys_and_immutability():
    [c] = _causes("", "configmaps", {"metadata": {"name": "c"}, "data": {"a b": "1"}})
    assert c["field"] == "data" and "a valid config key must consist" in c["message"]
    old = {"metadata": {"name": "c"}, "immutable": True, "data": {"a": "1"}}
    new = {"metadata": {"name": "c"}, "immutable": True, "data": {"a": "2"}}
    [c] = _causes("", "configmaps", new, old)
    assert c == {"type": "FieldValueForbidden", "field": "data",
                 "message": "Forbidden: field is immutable when `immutable` is set"}


def test_unknown_kind_and_crds_only_check_metadata():
    from k3py.api.resources import Resource
    res = Resource(group="x.io", version="v1", kind="Foo", plural="foos", crd=True)
    assert kinds.validate(res, {"metadata": {"name": "ok"}, "spec": {"any": 1}}) == []
    assert kinds.validate(res, {"metadata": {"name": "NO"}})[0]["field"] == "metadata.name"


def test_statefulset_mounts_may_name_its_claim_templates():
    sts = _deploy({"matchLabels": {"app": "db"}}, {"app": "db"})
    sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "data", "mountPath": "/data"}]
    sts["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]
    assert _causes("apps", "statefulsets", sts) == []
    sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["name"] = "other"
    [c] = _causes("apps", "statefulsets", sts)
    assert c["field"] == "spec.template.spec.containers[0].volumeMounts[0].name"
    assert "volumes" not in sts["spec"]["template"]["spec"]  # the object is not changed


def test_load_balancer_source_ranges():
    def lb(type_: str = "LoadBalancer", ranges=None, note=None) -> dict:
        md: dict = {"name": "web"}
        if note is not None:
            md["annotations"] = {"service.beta.kubernetes.io/load-balancer-source-ranges": note}
        spec: dict = {"type": type_, "ports": [{"port": 80}]}
        if ranges is not None:
            spec["loadBalancerSourceRanges"] = ranges
        return {"metadata": md, "spec": spec}
    assert _causes("", "services", lb(ranges=["10.0.0.0/8", " 192.168.1.7/24 "])) == []
    assert _causes("", "services", lb(note="10.0.0.0/8,192.168.1.0/24")) == []
    [c] = _causes("", "services", lb("NodePort", ["10.0.0.0/8"]))
    assert c == {"type": "FieldValueForbidden", "field": "spec.loadBalancerSourceRanges",
                 "message": "Forbidden: may only be used when `type` is 'LoadBalancer'"}
    [c] = _causes("", "services", lb(ranges=["10.0.0.0/8", "10.0.0.1"]))
    assert c["field"] == "spec.loadBalancerSourceRanges[1]" and c["message"] == (
        'Invalid value: "10.0.0.1": must be a list of IP ranges. For example, '
        "10.240.0.0/24,10.250.0.0/24 ")
    [c] = _causes("", "services", lb(note="10.0.0.0/8,nope"))
    assert c["field"] == \
        "metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]"
