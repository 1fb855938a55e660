"""The KubeEdge MQTT topics and payload rules, spelled once for both ends: the agent's device
twin (k3py.agent.devices.twin) and the mapper SDK (k3py.mapper.sdk) import them from here."""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "DEVICE_PREFIX", "NODE_PREFIX", "TWIN_UPDATE", "TWIN_UPDATE_RESULT", "TWIN_UPDATE_DOCUMENT",
    "TWIN_UPDATE_DELTA", "TWIN_GET", "TWIN_GET_RESULT", "STATE_UPDATE", "STATE_UPDATE_RESULT",
    "DEVICE_UPDATED", "MEMBERSHIP_GET", "MEMBERSHIP_GET_RESULT", "MEMBERSHIP_UPDATED",
    "REQUESTS", "DEVICE_SUFFIXES", "STATES", "DeviceTopic", "NodeTopic",
    "device_topic", "node_topic", "parse_topic", "valid_twin_name", "valid_twin_value",
]

DEVICE_PREFIX = "$hw/events/device/"
NODE_PREFIX = "$hw/events/node/"

# device topic suffixes (after the device id)
TWIN_UPDATE = "twin/update"
TWIN_UPDATE_RESULT = "twin/update/result"
TWIN_UPDATE_DOCUMENT = "twin/update/document"
TWIN_UPDATE_DELTA = "twin/update/delta"
TWIN_GET = "twin/get"
TWIN_GET_RESULT = "twin/get/result"
STATE_UPDATE = "state/update"
STATE_UPDATE_RESULT = "state/update/result"
DEVICE_UPDATED = "updated"
# node topic suffixes (after the node name)
MEMBERSHIP_GET = "membership/get"
MEMBERSHIP_GET_RESULT = "membership/get/result"
MEMBERSHIP_UPDATED = "membership/updated"

REQUESTS = frozenset({TWIN_UPDATE, TWIN_GET, STATE_UPDATE, MEMBERSHIP_GET})
DEVICE_SUFFIXES = (TWIN_UPDATE, TWIN_UPDATE_RESULT, TWIN_UPDATE_DOCUMENT, TWIN_UPDATE_DELTA,
                   TWIN_GET, TWIN_GET_RESULT, STATE_UPDATE, STATE_UPDATE_RESULT, DEVICE_UPDATED)
# longest first, so that "twin/update/result" is not read as device "…/twin" + "update/result"
_BY_LENGTH = sorted(DEVICE_SUFFIXES, key=lambda s: -s.count("/"))

# what state/update accepts (upstream mappers-go's set; compared case-insensitively)
STATES = ("online", "offline", "ok", "unknown", "unhealthy")

# KubeEdge dtcommon.ValidateTwinKey / ValidateTwinValue
_TWIN_NAME = re.compile(r"[a-zA-Z0-9_.,:/@#-]{1,128}")
_TWIN_VALUE = re.compile(r"[a-zA-Z0-9_.,:/@#-]{1,512}")


def valid_twin_name(name: str) -> bool:
    return bool(_TWIN_NAME.fullmatch(name))


def valid_twin_value(value: str) -> bool:
    """The empty string is allowed (upstream skips the check for it)."""
    return value == "" or bool(_TWIN_VALUE.fullmatch(value))


class DeviceTopic(NamedTuple):
    """`$hw/events/device/{name}/{suffix}` (legacy, KubeEdge up to v1.16: namespace is "") or
    `$hw/events/device/{namespace}/{name}/{suffix}` (v1.17+)."""
    namespace: str
    name: str
    suffix: str


class NodeTopic(NamedTuple):
    node: str
    suffix: str


def device_topic(namespace: str, name: str, suffix: str) -> str:
    """The topic in the form given: namespace "" gives the legacy name-only form."""
    ident = f"{namespace}/{name}" if namespace else name
    return f"{DEVICE_PREFIX}{ident}/{suffix}"


def node_topic(node: str, suffix: str) -> str:
    return f"{NODE_PREFIX}{node}/{suffix}"


def parse_topic(topic: str) -> DeviceTopic | NodeTopic | None:
    """A device or node topic, or None for anything else. The suffix is matched from the end
    (longest first), so both id forms parse without knowing which devices exist."""
    if topic.startswith(DEVICE_PREFIX):
        rest = topic[len(DEVICE_PREFIX):]
        for suffix in _BY_LENGTH:
            if rest.endswith("/" + suffix):
                ident = rest[:-len(suffix) - 1].split("/")
                if all(ident) and len(ident) == 1:
                    return DeviceTopic("", ident[0], suffix)
                if all(ident) and len(ident) == 2:
                    return DeviceTopic(ident[0], ident[1], suffix)
                return None
        return None
    if topic.startswith(NODE_PREFIX):
        node, _, suffix = topic[len(NODE_PREFIX):].partition("/")
        if node and suffix in (MEMBERSHIP_GET, MEMBERSHIP_GET_RESULT, MEMBERSHIP_UPDATED):
            return NodeTopic(node, suffix)
    return None
