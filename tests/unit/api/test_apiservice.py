"""APIService (apiregistration.k8s.io/v1) as kube-aggregator defines it: the local ones
kube-apiserver registers (names, priorities, labels), validation, the service port default,
the Available condition's wording and the NAME/SERVICE/AVAILABLE/AGE table."""

from __future__ import annotations

import pytest

from k3py.api import kinds
from k3py.api.kinds.apiregistration import available_condition, local_apiservice
from k3py.api.resources import builtin_registry

pytestmark = pytest.mark.unit

RES = builtin_registry().get("apiregistration.k8s.io", "v1", "apiservices")


def remote(**spec) -> dict:
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {"group": "metrics.k8s.io", "version": "v1beta1",
                     "groupPriorityMinimum": 100, "versionPriority": 100,
                     "service": {"namespace": "kube-system", "name": "metrics-server"},
                     **spec}}


def test_served_cluster_scoped_with_status():
    assert RES is not None and not RES.namespaced and "status" in RES.subresources


def test_local_apiservices_as_kube_apiserver_registers_them():
    core = local_apiservice("", "v1")
    assert core["metadata"]["name"] == "v1."
    assert core["spec"] == {"group": "", "version": "v1", "groupPriorityMinimum": 18000,
                            "versionPriority": 1}
    assert core["metadata"]["labels"] == {"kube-aggregator.kubernetes.io/automanaged":
                                          "onstart"}
    apps = local_apiservice("apps", "v1")
    assert apps["metadata"]["name"] == "v1.apps"
    assert (apps["spec"]["groupPriorityMinimum"], apps["spec"]["versionPriority"]) == (17800, 15)
    crd = local_apiservice("devices.kubeedge.io", "v1beta1", crd=True)
    assert crd["metadata"]["name"] == "v1beta1.devices.kubeedge.io"
    assert (crd["spec"]["groupPriorityMinimum"], crd["spec"]["versionPriority"]) == (1000, 100)
    assert crd["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"] == "true"
    assert "service" not in crd["spec"]
    assert local_apiservice("unknown.example.com", "v1") is None


def test_validation_and_defaults():
    obj = remote()
    kinds.default(RES, obj)
    assert obj["spec"]["service"]["port"] == 443
    assert kinds.validate(RES, obj) == []
    bad = remote(groupPriorityMinimum=0, versionPriority=5000)
    bad["metadata"]["name"] = "wrong"
    fields = {c["field"]: c["message"] for c in kinds.validate(RES, bad)}
    assert fields["metadata.name"] == ('Invalid value: "wrong": must be '
                                       '`spec.version+"."+spec.group`: '
                                       '"v1beta1.metrics.k8s.io"')
    assert fields["spec.groupPriorityMinimum"] == \
        "Invalid value: 0: must be positive and less than 20000"
    assert fields["spec.versionPriority"] == \
        "Invalid value: 5000: must be positive and less than 1000"
    no_group = remote(group="")
    no_group["metadata"]["name"] = "v1beta1."
    kinds.default(RES, no_group)
    assert [c["field"] for c in kinds.validate(RES, no_group)] == ["spec.group"]


def test_available_condition_wording():
    obj = remote()
    kinds.default(RES, obj)
    assert available_condition(local_apiservice("apps", "v1"), None, None) == (
        "True", "Local", "Local APIServices are always available")
    assert available_condition(obj, None, None) == (
        "False", "ServiceNotFound", 'service/metrics-server in "kube-system" is not present')
    svc = {"spec": {"ports": [{"name": "https", "port": 443}]}}
    assert available_condition(obj, {"spec": {"ports": [{"port": 80}]}}, None)[1] == \
        "ServicePortError"
    assert available_condition(obj, svc, None)[1] == "EndpointsNotFound"
    assert available_condition(obj, svc, {"subsets": []})[1] == "MissingEndpoints"
    ep = {"subsets": [{"addresses": [{"ip": "10.42.0.5"}], "ports": [{"name": "https",
                                                                       "port": 4443}]}]}
    status, reason, message = available_condition(obj, svc, ep)
    assert (status, reason) == ("False", "FailedDiscoveryCheck")
    assert "does not proxy to aggregated API servers" in message


def test_table_columns_and_rows():
    import datetime as dt
    cols = [c["name"] for c in kinds.table_columns(RES)]
    assert cols == ["Name", "Service", "Available", "Age"]
    now = dt.datetime.now(dt.UTC)
    local = local_apiservice("apps", "v1")
    local["status"] = {"conditions": [{"type": "Available", "status": "True",
                                       "reason": "Local"}]}
    assert kinds.table_row(RES, local, now)[:3] == ["v1.apps", "Local", "True"]
    obj = remote()
    obj["status"] = {"conditions": [{"type": "Available", "status": "False",
                                     "reason": "ServiceNotFound"}]}
    assert kinds.table_row(RES, obj, now)[:3] == [
        "v1beta1.metrics.k8s.io", "kube-system/metrics-server", "False (ServiceNotFound)"]
    assert kinds.table_row(RES, remote(), now)[2] == "Unknown"
