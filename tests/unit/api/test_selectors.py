"""Label and field selectors: upstream's parse results, matching and error messages."""

import pytest

from k3py.api.errors import StatusError
from k3py.api.resources import Resource, builtin_registry
from k3py.api.selectors import (
    SelectorError,
    label_selector_from_struct,
    parse_field_selector,
    parse_label_selector,
    selector_to_string,
)

pytestmark = pytest.mark.unit
REG = builtin_registry()


def test_string_form_all_operators_match():
    sel = parse_label_selector("a=b,c!=d,e in (x,y),f notin (z),g,!h,i==j")
    labels = {"a": "b", "c": "x", "e": "y", "f": "q", "g": "", "i": "j"}
    assert sel.matches(labels)
    assert not sel.matches({**labels, "h": "1"})
    assert not sel.matches({**labels, "e": "w"})
    assert sel.matches({k: v for k, v in labels.items() if k != "c"})  # != matches a missing key
    assert str(sel) == "a=b,c!=d,e in (x,y),f notin (z),g,!h,i==j"


def test_string_is_sorted_by_key_and_values_deduplicated():
    assert str(parse_label_selector("z=1, b in (y,x,x)")) == "b in (x,y),z=1"
    assert parse_label_selector("").empty and parse_label_selector("").matches({"a": "b"})


def test_gt_lt():
    sel = parse_label_selector("n>3,m<10")
    assert sel.matches({"n": "4", "m": "9"})
    assert not sel.matches({"n": "3", "m": "9"})
    assert not sel.matches({"n": "x", "m": "9"})


@pytest.mark.parametrize("text,message", [
    ("a=b c", "found 'c', expected: ',' or 'end of string'"),
    ("=b", "found '=', expected: !, identifier, or 'end of string'"),
    ("a,", "found '', expected: identifier after ','"),
    ("a in b", "unable to parse requirement: found 'b' expected: '('"),
    ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
    ("-a=b", 'unable to parse requirement: key: Invalid value: "-a": name part must consist '
             "of alphanumeric characters, '-', '_' or '.', and must start and end with an "
             "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used "
             "for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"),
    ("a=-b", 'unable to parse requirement: values[0][a]: Invalid value: "-b": a valid label '
             "must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
             "and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
             "'my_value',  or '12345', regex used for validation is "
             "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
])
def test_string_form_errors_are_400_with_upstream_message(text, message):
    with pytest.raises(StatusError) as e:
        parse_label_selector(text)
    assert e.value.code == 400 and e.value.reason == "BadRequest"
    assert e.value.message == message


def test_structured_form():
    sel = label_selector_from_struct({"matchLabels": {"app": "web"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["fe", "be"]},
        {"key": "legacy", "operator": "DoesNotExist"}]})
    assert sel.matches({"app": "web", "tier": "fe"})
    assert not sel.matches({"app": "web", "tier": "fe", "legacy": "1"})
    assert label_selector_from_struct({}).matches({"x": "y"})
    assert not label_selector_from_struct(None).matches({})
    assert selector_to_string({"matchLabels": {"z": "1"}, "matchExpressions": [
        {"key": "a", "operator": "Exists"}]}) == "a,z=1"
    with pytest.raises(SelectorError, match='"Gt" is not a valid label selector operator'):
        label_selector_from_struct({"matchExpressions": [{"key": "a", "operator": "Gt"}]})


def test_field_selectors_for_pods():
    pods = REG.get("", "v1", "pods")
    pod = {"metadata": {"name": "p", "namespace": "ns"},
           "spec": {"nodeName": "n1"}, "status": {"phase": "Running", "podIP": "10.0.0.1"}}
    assert parse_field_selector("spec.nodeName=n1,status.phase!=Pending", pods).matches(pod)
    assert parse_field_selector("metadata.name==p", pods).matches(pod)
    assert not parse_field_selector("status.podIP=10.0.0.2", pods).matches(pod)
    assert parse_field_selector("spec.hostNetwork=false", pods).matches(pod)
    with pytest.raises(StatusError) as e:
        parse_field_selector("spec.foo=bar", pods)
    assert e.value.code == 400 and e.value.message == "field label not supported: spec.foo"


def test_field_selectors_other_kinds():
    cms = REG.get("", "v1", "configmaps")
    with pytest.raises(StatusError) as e:
        parse_field_selector("foo=bar", cms)
    assert e.value.message == ('"foo" is not a known field selector: only "metadata.name", '
                               '"metadata.namespace"')
    secrets = REG.get("", "v1", "secrets")
    assert parse_field_selector("type=Opaque", secrets).matches({"type": "Opaque"})
    nodes = REG.get("", "v1", "nodes")
    assert parse_field_selector("spec.unschedulable=false", nodes).matches({"spec": {}})
    events = REG.get("", "v1", "events")
    ev = {"involvedObject": {"kind": "Pod", "name": "p"}, "source": {"component": "kubelet"}}
    assert parse_field_selector("involvedObject.kind=Pod,source=kubelet", events).matches(ev)
    with pytest.raises(StatusError, match="can't understand 'foo'"):
        parse_field_selector("foo", cms)


def test_field_selectors_on_custom_resources():
    shirts = Resource(group="example.com", version="v1", kind="Shirt", plural="shirts",
                      crd=True, extra={"selectable_fields": ("spec.color", "spec.quantity",
                                                             "spec.branded")})
    shirt = {"metadata": {"name": "s", "namespace": "ns"},
             "spec": {"color": "red", "quantity": 2, "branded": False}}
    assert parse_field_selector("spec.color=red,spec.quantity=2,spec.branded=false",
                                shirts).matches(shirt)
    assert parse_field_selector("metadata.namespace=ns", shirts).matches(shirt)
    assert parse_field_selector("spec.color=", shirts).matches({"spec": {}})  # absent: ""
    with pytest.raises(StatusError) as e:
        parse_field_selector("spec.size=M", shirts)
    assert (e.value.code, e.value.message) == (400, "field label not supported: spec.size")
    cluster_scoped = Resource(group="example.com", version="v1", kind="Hat", plural="hats",
                              namespaced=False, crd=True)
    with pytest.raises(StatusError) as e:
        parse_field_selector("metadata.namespace=ns", cluster_scoped)
    assert e.value.message == "field label not supported: metadata.namespace"
