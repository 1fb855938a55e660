"""Two k3py servers started by serve() in one process keep their plug-ins apart: a CRD, its
schema and its terminating state on one are not seen by the other; RBAC bindings grant only
on their own server; each server caches a resource once, whoever reads it.

In-process servers on free ports with temporary data dirs, driven with the real kubectl."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from k3py.api import errors
from k3py.config import ServerConfig
from k3py.server.apiserver.auth import User
from k3py.server.main import RunningServer, serve, shutdown
from tests.harness import KUBECTL, free_port
from tests.unit.conftest import eventually

pytestmark = pytest.mark.integration

STRICT_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              color: {type: string, enum: [red, blue]}
"""
# the same CRD name on the other server, with a schema that lets any spec through
LOOSE_CRD = STRICT_CRD.replace("""            properties:
              color: {type: string, enum: [red, blue]}""",
                               "            x-kubernetes-preserve-unknown-fields: true")


def widget(name: str, color: str, finalizers: tuple[str, ...] = ()) -> str:
    return json.dumps({"apiVersion": "example.com/v1", "kind": "Widget",
                       "metadata": {"name": name, "finalizers": list(finalizers)},
                       "spec": {"color": color}})


class InProcessServer:
    def __init__(self, running: RunningServer, kubeconfig: Path) -> None:
        self.running = running
        self.kubeconfig = kubeconfig

    async def kubectl(self, *args: str, input: str | None = None,
                      check: bool = True) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            KUBECTL, "--kubeconfig", str(self.kubeconfig), *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(input.encode() if input else None),
                                          60)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{out.decode()}\n"
                                 f"{err.decode()}")
        return proc.returncode or 0, out.decode(), err.decode()

    async def established(self, name: str) -> bool:
        code, out, _ = await self.kubectl("get", "crd", name, "-o", "json", check=False)
        conds = json.loads(out).get("status", {}).get("conditions", []) if code == 0 else []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conds)


@contextlib.asynccontextmanager
async def two_servers(tmp_path: Path) -> AsyncIterator[tuple[InProcessServer, InProcessServer]]:
    started: list[RunningServer] = []
    try:
        out = []
        for name in ("a", "b"):
            kubeconfig = tmp_path / name / "kubeconfig.yaml"
            config = ServerConfig(data_dir=str(tmp_path / name), bind_address="127.0.0.1",
                                  advertise_address="127.0.0.1",
                                  https_listen_port=free_port(),
                                  write_kubeconfig=str(kubeconfig), disable_agent=True)
            started.append(await serve(config))
            out.append(InProcessServer(started[-1], kubeconfig))
        yield out[0], out[1]
    finally:
        for running in reversed(started):
            await shutdown(running)


async def test_crd_schema_and_terminating_stay_on_their_server(tmp_path):
    async with two_servers(tmp_path) as (a, b):
        await a.kubectl("apply", "-f", "-", input=STRICT_CRD)
        await b.kubectl("apply", "-f", "-", input=LOOSE_CRD)
        for srv in (a, b):
            await eventually(lambda srv=srv: srv.established("widgets.example.com"), 30,
                             0.2, "CRD established")

        code, _, err = await a.kubectl("create", "-f", "-", input=widget("w1", "pink"),
                                       check=False)
        assert code != 0 and 'spec.color: Unsupported value: "pink"' in err
        await b.kubectl("create", "-f", "-", input=widget("w1", "pink"))
        _, out, _ = await b.kubectl("get", "widget", "w1", "-o", "jsonpath={.spec.color}")
        assert out == "pink"

        # A's CRD is terminating (a widget's finalizer holds it): A refuses new widgets, B not
        await a.kubectl("create", "-f", "-", input=widget("held", "red", ("example.com/hold",)))
        await a.kubectl("delete", "crd", "widgets.example.com", "--wait=false")

        async def a_refuses() -> bool:
            code, _, err = await a.kubectl("create", "-f", "-", input=widget("w2", "red"),
                                           check=False)
            return code != 0 and "terminating" in err
        await eventually(a_refuses, 30, 0.2, "A refusing widgets while its CRD terminates")
        await b.kubectl("create", "-f", "-", input=widget("w2", "red"))
        await a.kubectl("patch", "widget", "held", "--type=merge", "-p",
                        '{"metadata":{"finalizers":null}}')


async def test_rbac_and_chains_are_per_server(tmp_path):
    async with two_servers(tmp_path) as (a, b):
        for srv in (a, b):
            assert srv.running.api.authorizer.names() == ["SystemMasters", "Node", "RBAC",
                                                          "Deny"]
            assert srv.running.registry.admission.describe() == [
                ("prepare", "CustomResourceStrategy"), ("prepare", "ServiceAllocatedValues"),
                ("mutate", "ServiceAllocation"), ("mutate", "ServiceAccount"),
                ("mutate", "PodSecurity"), ("mutate", "DefaultStorageClass"),
                ("mutate", "StorageObjectInUseProtection"),
                ("validate", "CustomResourceValidation"), ("validate", "NodeRestriction"),
                ("validate", "RBACEscalation"), ("update-check", "PodSecurity"),
                ("convert", "CustomResourceConversion"), ("after-delete", "ServiceRelease")]
        assert a.running.registry.admission is not b.running.registry.admission

        await b.kubectl("create", "clusterrole", "pod-reader", "--verb=get,list",
                        "--resource=pods")
        await b.kubectl("create", "clusterrolebinding", "alice-reads", "--user=alice",
                        "--clusterrole=pod-reader")
        alice = User("alice", ("system:authenticated",))

        def allowed(srv: InProcessServer) -> bool:
            try:
                srv.running.api.authorizer.authorize(alice, "list", "", "pods", "default")
            except errors.StatusError as e:
                assert e.code == 403
                return False
            return True
        await eventually(lambda: allowed(b), 10, 0.05, "B's RBAC granting alice")
        assert not allowed(a)

        # one pods informer per server, shared by the tunnel and the controllers
        pods_informers = [t for t in asyncio.all_tasks() if t.get_name() == "informer-pods"]
        assert len(pods_informers) == 2
