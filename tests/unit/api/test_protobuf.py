"""Decoding of `application/vnd.kubernetes.protobuf` bodies: real kubectl 1.37 captures compared
with `kubectl --dry-run=client -o json`, plus hand-built messages for the special wire types."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest

from k3py.api import errors
from k3py.api.protobuf import MAGIC, decode_k8s_protobuf, go_duration

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures" / "protobuf"
CASES = sorted(p.stem for p in FIXTURES.glob("*.bin"))


def prune(v):
    """Drop what Go's JSON encoder writes for unset non-pointer structs: null, {} and []."""
    if isinstance(v, dict):
        out = {k: prune(x) for k, x in v.items()}
        return {k: x for k, x in out.items() if x is not None and x != {} and x != []}
    if isinstance(v, list):
        return [prune(x) for x in v]
    return v


# --- a tiny encoder for hand-built messages --------------------------------------------------

def vint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ld(num: int, payload: bytes | str) -> bytes:
    payload = payload.encode() if isinstance(payload, str) else payload
    return vint(num << 3 | 2) + vint(len(payload)) + payload


def vf(num: int, n: int) -> bytes:
    return vint(num << 3) + vint(n)


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return MAGIC + ld(1, ld(1, api_version) + ld(2, kind)) + ld(2, raw) + ld(3, "") + ld(4, "")


def entry(key: str, value: bytes | str) -> bytes:
    return ld(1, key) + ld(2, value)


# --- captured kubectl bodies -----------------------------------------------------------------

def test_fixtures_present():
    assert len(CASES) >= 25
    commands = json.loads((FIXTURES / "commands.json").read_text())
    assert set(commands) == set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_kubectl_capture_matches_dry_run_json(case):
    body = (FIXTURES / f"{case}.bin").read_bytes()
    assert body.startswith(MAGIC)
    expected = prune(json.loads((FIXTURES / f"{case}.json").read_text()))
    assert decode_k8s_protobuf(body) == expected


def test_meaningful_zeros_and_empty_map_values():
    dep = decode_k8s_protobuf((FIXTURES / "deployment.bin").read_bytes())
    assert dep["spec"]["replicas"] == 0
    assert "strategy" not in dep["spec"] and "creationTimestamp" not in dep["metadata"]
    assert decode_k8s_protobuf((FIXTURES / "pdb_min.bin").read_bytes())["spec"]["minAvailable"] == 0
    pc = decode_k8s_protobuf((FIXTURES / "priorityclass_zero.bin").read_bytes())
    assert pc["value"] == 0 and pc["globalDefault"] is True
    cm = decode_k8s_protobuf((FIXTURES / "configmap.bin").read_bytes())
    assert cm["data"] == {"a": "b", "empty": ""}
    secret = decode_k8s_protobuf((FIXTURES / "secret_generic.bin").read_bytes())
    assert base64.b64decode(secret["data"]["password"]) == b"s3cr3t"
    assert secret["data"]["empty"] == ""


def test_intstr_forms():
    assert decode_k8s_protobuf((FIXTURES / "pdb_max.bin").read_bytes())["spec"][
        "maxUnavailable"] == "50%"
    ports = decode_k8s_protobuf((FIXTURES / "service_clusterip.bin").read_bytes())["spec"]["ports"]
    assert [p["targetPort"] for p in ports] == [8080, "https"]


def test_token_request():
    tr = decode_k8s_protobuf((FIXTURES / "token.bin").read_bytes())
    assert tr["kind"] == "TokenRequest"
    assert tr["spec"] == {"audiences": ["a", "b"], "expirationSeconds": 3600}


def test_negotiation_routes_protobuf():
    from k3py.server.apiserver.negotiation import decode_body

    body = (FIXTURES / "namespace.bin").read_bytes()
    got = decode_body(body, "application/vnd.kubernetes.protobuf")
    assert got == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns2"}}


# --- hand-built messages ---------------------------------------------------------------------

def _pod() -> bytes:
    time = vf(1, 1704067200) + vf(2, 5)
    meta = (ld(1, "p") + ld(8, time) + vf(10, 0) + ld(11, entry("app", "x"))
            + ld(11, entry("empty", "")))
    http_get = ld(1, "/healthz") + ld(2, vf(1, 1) + ld(3, "http"))
    probe = ld(1, ld(2, http_get)) + vf(2, 0) + vf(4, 10)
    resources = ld(1, entry("cpu", ld(1, "500m"))) + ld(1, entry("memory", ld(1, "1Gi")))
    sc = vf(2, 0) + vf(4, 0)
    container = (ld(1, "c") + ld(2, "nginx") + ld(3, "sh") + ld(3, "")
                 + ld(6, ld(1, "") + vf(3, 80) + ld(4, "TCP"))
                 + ld(8, resources) + ld(10, probe) + ld(15, sc) + vf(16, 0))
    volume = ld(1, "v") + ld(2, ld(2, b""))
    spec = (ld(1, volume) + ld(2, container) + ld(3, "Always") + vf(4, -1)
            + ld(7, entry("disk", "ssd")) + vf(21, 0) + vf(25, 0))
    return ld(1, meta) + ld(2, spec) + ld(3, b"")


def test_hand_built_pod():
    got = decode_k8s_protobuf(envelope("v1", "Pod", _pod()))
    assert got == {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z",
                     "deletionGracePeriodSeconds": 0, "labels": {"app": "x", "empty": ""}},
        "spec": {
            "volumes": [{"name": "v", "emptyDir": {}}],
            "containers": [{
                "name": "c", "image": "nginx", "command": ["sh", ""],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                                  "periodSeconds": 10},
                "securityContext": {"privileged": False, "runAsUser": 0},
            }],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": -1,
            "nodeSelector": {"disk": "ssd"}, "automountServiceAccountToken": False,
            "priority": 0,
        },
    }


def test_micro_time_duration_raw_and_fields_v1():
    lease = ld(1, ld(1, "l")) + ld(2, ld(1, "me") + vf(2, 15) + ld(4, vf(1, 0) + vf(2, 123456789)))
    got = decode_k8s_protobuf(envelope("coordination.k8s.io/v1", "Lease", lease))
    assert got["spec"] == {"holderIdentity": "me", "leaseDurationSeconds": 15,
                           "renewTime": "1970-01-01T00:00:00.123456Z"}
    mf = ld(1, "kubectl") + ld(6, "FieldsV1") + ld(7, ld(1, b'{"f:data":{}}'))
    rev = ld(1, ld(1, "r") + ld(17, mf)) + ld(2, ld(1, b'{"spec":{"x":[1,2]}}')) + vf(3, 4)
    got = decode_k8s_protobuf(envelope("apps/v1", "ControllerRevision", rev))
    assert got["data"] == {"spec": {"x": [1, 2]}} and got["revision"] == 4
    assert got["metadata"]["managedFields"] == [
        {"manager": "kubectl", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}]


def test_go_duration_format():
    assert go_duration(0) == "0s"
    assert go_duration(3600 * 10**9) == "1h0m0s"
    assert go_duration(90 * 10**9) == "1m30s"
    assert go_duration(1_500_000_000) == "1.5s"
    assert go_duration(300_000_000) == "300ms"
    assert go_duration(1_500) == "1.5µs"
    assert go_duration(-42) == "-42ns"


def test_eviction_delete_options_and_meta_fallback():
    opts = vf(1, 0) + ld(5, "All") + ld(4, "Background")
    ev = ld(1, ld(1, "p") + ld(3, "ns")) + ld(2, opts)
    got = decode_k8s_protobuf(envelope("policy/v1", "Eviction", ev))
    assert got["deleteOptions"] == {"gracePeriodSeconds": 0, "dryRun": ["All"],
                                    "propagationPolicy": "Background"}
    got = decode_k8s_protobuf(envelope("apps/v1", "DeleteOptions", opts))
    assert got == {"apiVersion": "apps/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                   "dryRun": ["All"], "propagationPolicy": "Background"}


def test_crd_json_schema_props():
    def props(*parts: bytes) -> bytes:
        return b"".join(parts)
    string_prop = props(ld(5, "string"), ld(20, ld(1, b'"a"')), ld(20, ld(1, b'"b"')))
    num_prop = props(ld(5, "integer"), vint(9 << 3 | 1) + struct.pack("<d", 10.0),
                     ld(8, ld(1, b"3")))
    schema = props(ld(5, "object"), ld(29, entry("s", string_prop)), ld(29, entry("n", num_prop)),
                   ld(30, vf(1, 1)), ld(24, ld(1, ld(5, "string"))), ld(23, "s"),
                   vf(38, 1), ld(44, ld(1, "self.n > 0")))
    version = ld(1, "v1") + vf(2, 1) + vf(3, 1) + ld(4, ld(1, schema))
    names = ld(1, "widgets") + ld(2, "widget") + ld(4, "Widget")
    spec = ld(1, "example.com") + ld(3, names) + ld(4, "Namespaced") + ld(7, version)
    crd = ld(1, ld(1, "widgets.example.com")) + ld(2, spec)
    got = decode_k8s_protobuf(envelope("apiextensions.k8s.io/v1", "CustomResourceDefinition", crd))
    assert got["spec"]["versions"] == [{
        "name": "v1", "served": True, "storage": True,
        "schema": {"openAPIV3Schema": {
            "type": "object",
            "properties": {"s": {"type": "string", "enum": ["a", "b"]},
                           "n": {"type": "integer", "maximum": 10.0, "default": 3}},
            "additionalProperties": True, "items": {"type": "string"}, "required": ["s"],
            "x-kubernetes-preserve-unknown-fields": True,
            "x-kubernetes-validations": [{"rule": "self.n > 0"}],
        }},
    }]
    assert got["spec"]["group"] == "example.com" and got["spec"]["scope"] == "Namespaced"


def test_packed_repeated_and_bytes():
    wh = ld(1, "w.example.com") + ld(2, ld(2, b"\x00\xffpem") + ld(3, "https://x"))
    cfg = ld(1, ld(1, "c")) + ld(2, wh)
    got = decode_k8s_protobuf(envelope("admissionregistration.k8s.io/v1",
                                       "ValidatingWebhookConfiguration", cfg))
    assert got["webhooks"][0]["clientConfig"] == {
        "caBundle": base64.b64encode(b"\x00\xffpem").decode(), "url": "https://x"}
    # Job podFailurePolicy onExitCodes.values: repeated int32, packed and unpacked on the wire.
    packed = ld(3, vint(1) + vint(42) + vint(-3))
    req = ld(2, "In") + packed + vf(3, 7)
    spec = ld(11, ld(1, ld(1, "FailJob") + ld(2, req))) + vf(7, 0) + vf(10, 0)
    got = decode_k8s_protobuf(envelope("batch/v1", "Job", ld(1, ld(1, "j")) + ld(2, spec)))
    assert got["spec"] == {
        "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {
            "operator": "In", "values": [1, 42, -3, 7]}}]},
        "backoffLimit": 0, "suspend": False}
    # unknown field numbers are skipped, as the Go unmarshaller does
    body = ld(1, ld(1, "x")) + ld(99, b"\x01\x02")
    assert decode_k8s_protobuf(envelope("v1", "ConfigMap", body)) == {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}


def test_errors():
    with pytest.raises(errors.StatusError) as e:
        decode_k8s_protobuf(b'{"kind": "ConfigMap"}')
    assert e.value.code == 400
    with pytest.raises(errors.StatusError) as e:
        decode_k8s_protobuf(envelope("example.com/v1", "Widget", b""))
    assert e.value.code == 415
    with pytest.raises(errors.StatusError) as e:
        decode_k8s_protobuf(envelope("v1", "ConfigMap", ld(1, b"\x0a\x05ab")))
    assert e.value.code == 400
    with pytest.raises(errors.StatusError) as e:
        decode_k8s_protobuf(envelope("v1", "ConfigMap", b"\x0b"))  # wire type 3 (group)
    assert e.value.code == 400
    with pytest.raises(errors.StatusError) as e:
        decode_k8s_protobuf(MAGIC + ld(1, ld(1, "v1") + ld(2, "ConfigMap")) + ld(3, "gzip"))
    assert e.value.code == 415


def test_hints_used_when_type_meta_missing():
    body = MAGIC + ld(2, ld(1, ld(1, "n")))
    assert decode_k8s_protobuf(body, "v1", "Namespace") == {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}


def test_corrupted_bodies_only_raise_status_errors():
    import random
    rnd = random.Random(7)
    bodies = [(FIXTURES / f"{c}.bin").read_bytes() for c in CASES]
    for _ in range(2000):
        b = bytearray(rnd.choice(bodies))
        for _ in range(rnd.randint(1, 4)):
            j = rnd.randrange(len(MAGIC), len(b))
            op = rnd.random()
            if op < 0.5:
                b[j] = rnd.randrange(256)
            elif op < 0.75:
                del b[j]
            else:
                b.insert(j, rnd.randrange(256))
        try:
            decode_k8s_protobuf(bytes(b))
        except errors.StatusError as e:
            assert e.code in (400, 415)
