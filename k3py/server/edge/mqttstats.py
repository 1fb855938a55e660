"""The newest MQTT summary of every connected node (k3py.tunnel.mqtt.MqttSummary), in memory
only: written by the node tunnel (upstream.py), forgotten when the node's link goes down, read
by the dashboard (k3py.server.dashboard.mqtt), which `listeners` tell of each change."""

from __future__ import annotations

from collections.abc import Callable

from k3py.tunnel.mqtt import MqttSummary

__all__ = ["MqttFigures", "MAX_NODES"]

MAX_NODES = 5000  # summaries kept (one per connected node)


class MqttFigures:
    def __init__(self) -> None:
        self._nodes: dict[str, MqttSummary] = {}
        self.listeners: set[Callable[[str], None]] = set()

    def record(self, node: str, summary: MqttSummary) -> None:
        if node not in self._nodes and len(self._nodes) >= MAX_NODES:
            return
        self._nodes[node] = summary
        self._changed(node)

    def forget(self, node: str) -> None:
        if self._nodes.pop(node, None) is not None:
            self._changed(node)

    def get(self, node: str) -> MqttSummary | None:
        return self._nodes.get(node)

    def table(self) -> dict[str, dict]:
        return {name: s.to_content() for name, s in self._nodes.items()}

    def _changed(self, node: str) -> None:
        for listener in list(self.listeners):
            listener(node)
