"""Devices down the tunnel: the KubeEdge temperature demo's DeviceModel and Device (v1alpha2,
nodeSelector) and a v1beta1 Device (spec.nodeName) reach the agent of the node they name and
are kept in its agent/meta.db; moving or deleting a device removes it there, and a server
restart resends them in the node's snapshot. Uses the server's embedded agent."""

from __future__ import annotations

import uuid

import pytest

from tests.harness import wait_for
from tests.integration.agents import EmbeddedServer, cached_names, remove_podman_pods
from tests.integration.test_crds import DEVICE, MODEL

pytestmark = pytest.mark.integration

V1BETA1 = """
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {name: counter, namespace: default}
spec:
  deviceModelRef: {name: temperature-model}
  nodeName: NODE
"""


def test_devices_reach_their_node(tmp_path):
    node = f"dev-{uuid.uuid4().hex[:6]}"
    srv = EmbeddedServer(tmp_path / "k3py", extra_args=["--node-name", node])
    meta_db = tmp_path / "k3py" / "agent" / "meta.db"
    try:
        srv.start()
        wait_for(lambda: srv.kubectl("get", "devices", check=False).returncode == 0, 30, 0.2,
                 "devices served")
        wait_for(lambda: meta_db.exists(), 30, 0.2, "agent meta.db")
        srv.kubectl("apply", "-f", "-", input=MODEL)
        srv.kubectl("apply", "-f", "-", input=DEVICE.replace("edge-node", node))
        srv.kubectl("apply", "-f", "-", input=V1BETA1.replace("NODE", node))
        wait_for(lambda: cached_names(meta_db, "devices") == {"temperature", "counter"}, 30, 0.2,
                 "both devices cached by the agent")
        assert cached_names(meta_db, "devicemodels") == {"temperature-model"}

        srv.kubectl("patch", "device", "counter", "--type=merge",
                    "-p", '{"spec":{"nodeName":"elsewhere"}}')
        wait_for(lambda: cached_names(meta_db, "devices") == {"temperature"}, 30, 0.2,
                 "moved device dropped")

        srv.stop()
        srv.start()
        srv.kubectl("delete", "device", "temperature")
        wait_for(lambda: cached_names(meta_db, "devices") == set(), 30, 0.2,
                 "deleted device dropped after a server restart")
    finally:
        srv.stop()
        remove_podman_pods(node)
