"""Status bodies byte for byte as kube-apiserver writes them: metav1.Status, StatusDetails and
StatusCause fields in struct order, a cause's type as "reason", Go's HTML escapes and the
newline json.Encoder adds; and the exec error channel's Status as the kubelet writes it."""

from __future__ import annotations

import pytest

from k3py.api import errors
from k3py.api.validation import invalid_value
from k3py.server.apiserver.negotiation import finish_json, json_body

pytestmark = pytest.mark.unit


def body(err: errors.StatusError) -> str:
    return json_body(err.to_status()).decode()


def test_404_not_found_like_upstream():
    assert body(errors.not_found("", "configmaps", "nope")) == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        '"message":"configmaps \\"nope\\" not found","reason":"NotFound",'
        '"details":{"name":"nope","kind":"configmaps"},"code":404}\n')


def test_409_already_exists_and_conflict_like_upstream():
    assert body(errors.already_exists("apps", "deployments", "web")) == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        '"message":"deployments.apps \\"web\\" already exists","reason":"AlreadyExists",'
        '"details":{"name":"web","group":"apps","kind":"deployments"},"code":409}\n')
    why = "the object has been modified; please apply your changes to the latest version " \
          "and try again"
    assert body(errors.conflict("", "configmaps", "c", why)) == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        '"message":"Operation cannot be fulfilled on configmaps \\"c\\": the object has been '
        'modified; please apply your changes to the latest version and try again",'
        '"reason":"Conflict","details":{"name":"c","kind":"configmaps"},"code":409}\n')


def test_410_expired_like_upstream():
    assert body(errors.expired("too old resource version: 1 (20)")) == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        '"message":"too old resource version: 1 (20)","reason":"Expired","code":410}\n')


def test_422_invalid_causes_carry_reason_message_field():
    cause = invalid_value("spec.replicas", -1, "must be greater than or equal to 0")
    assert body(errors.invalid("apps", "Deployment", "web", [cause])) == (
        '{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        '"message":"Deployment.apps \\"web\\" is invalid: spec.replicas: Invalid value: -1: '
        'must be greater than or equal to 0","reason":"Invalid",'
        '"details":{"name":"web","group":"apps","kind":"Deployment","causes":[{'
        '"reason":"FieldValueInvalid","message":"Invalid value: -1: must be greater than or '
        'equal to 0","field":"spec.replicas"}]},"code":422}\n')


def test_go_escapes_and_empty_fields_left_out():
    err = errors.StatusError(500, "", "a <b> & c\u2028")
    assert body(err) == ('{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
                         '"message":"a \\u003cb\\u003e \\u0026 c\\u2028","code":500}\n')
    assert finish_json(b'{"a":"x"}') == b'{"a":"x"}\n'
    # both line separators escaped; other characters sharing their lead byte (\xe2) kept
    assert finish_json('{"a":"\u2029\u20ac\u2028\u2019"}'.encode()) == \
        '{"a":"\\u2029\u20ac\\u2028\u2019"}\n'.encode()
    assert json_body(errors.status_success({"kind": "pods", "name": "p", "uid": "u"})) == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success",'
        b'"details":{"name":"p","kind":"pods","uid":"u"}}\n')


def test_exec_error_channel_statuses_like_the_kubelet():
    import orjson
    assert orjson.dumps(errors.exit_code_status(["sh", "-c", "exit 3"], 3)) == (
        b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit '
        b'code: error executing command [sh -c exit 3], exit code 3","reason":'
        b'"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}')
    assert orjson.dumps(errors.stream_success()) == b'{"metadata":{},"status":"Success"}'
    assert orjson.dumps(errors.bad_request("no").stream_status()) == (
        b'{"metadata":{},"status":"Failure","message":"no","reason":"BadRequest","code":400}')
