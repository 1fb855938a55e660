"""What a twin/update must be before the twin changes anything, with no I/O: upstream's checks
(dtcommon.Validate*) and reasons (dttype.Error*), which mappers match on.

Used by the twin (twin.py), which answers a `Rejected` with upstream's error form; reads
twin names and value patterns from k3py.mapper.topics and devices from twinrecords.py."""

from __future__ import annotations

from typing import Any

from k3py.agent.devices.twinrecords import Device
from k3py.mapper import topics as t

__all__ = ["ERR_UNMARSHAL", "ERR_NO_TWIN", "ERR_KEY", "ERR_VALUE", "ERR_NOT_EXIST", "ERR_BODY",
           "Rejected", "value_error", "validated_twins"]

# upstream's reasons (dttype.Error*), so that mappers matching on them keep working
ERR_UNMARSHAL = "Unmarshal update request body failed, please check the request"
ERR_NO_TWIN = "Update twin error, key:twin does not exist"
ERR_KEY = ("The key of twin must only include upper or lowercase letters, number, english, and "
           "special letter - _ . , : / @ # and the length of key should be less than 128 bytes")
ERR_VALUE = ("The value of twin must only include upper or lowercase letters, number, english, "
             "and special letter - _ . , : / @ # and the length of value should be less than "
             "512 bytes")
ERR_NOT_EXIST = "update rejected due to the device is not existed"
ERR_BODY = "the request body is wrong"


def value_error(value_type: str, value: str) -> str | None:
    """dtcommon.ValidateValue: None when `value` fits `value_type`, else upstream's reason."""
    if value_type in ("", "string", "deleted"):
        return None
    if value_type in ("int", "integer"):
        try:
            n = int(value, 10)
        except ValueError:
            return "the value is not int or integer"
        return None if -2**63 <= n < 2**63 else "the value is not int or integer"
    if value_type == "float":
        try:
            float(value)
        except ValueError:
            return "the value is not float"
        return None
    if value_type == "boolean":
        return None if value in ("true", "false") else "the bool value must be true or false"
    return "the value type is not allowed"


class Rejected(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def validated_twins(dev: Device, body: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """The `twin` map of a twin/update, checked as upstream does before anything changes
    (names, value patterns, types from the model); raises Rejected(400)."""
    twins = body.get("twin")
    if twins is None:
        raise Rejected(400, ERR_NO_TWIN)
    if not isinstance(twins, dict):
        raise Rejected(400, ERR_UNMARSHAL)
    for key, msg in twins.items():
        if not t.valid_twin_name(key):
            raise Rejected(400, ERR_KEY)
        if msg is None:
            if key not in dev.twins:
                raise Rejected(400, ERR_BODY)
            continue
        if not isinstance(msg, dict):
            raise Rejected(400, ERR_UNMARSHAL)
        meta = msg.get("metadata")
        if meta is not None and not (isinstance(meta, dict)
                                     and isinstance(meta.get("type", ""), str)):
            raise Rejected(400, ERR_UNMARSHAL)
        if "optional" in msg and not isinstance(msg["optional"], bool):
            raise Rejected(400, ERR_UNMARSHAL)
        twin = dev.twins.get(key)
        msg_type = (meta or {}).get("type") or "string"
        # the model's type rules; a mapper's own metadata.type (upstream demos send
        # "Updated") only counts for a twin it adds or re-adds after a delete
        value_type = msg_type if twin is None or twin.deleted else twin.type
        for side in ("expected", "actual"):
            if side not in msg or msg[side] is None:
                continue
            part = msg[side]
            if not isinstance(part, dict) or not isinstance(part.get("value"), str):
                raise Rejected(400, ERR_UNMARSHAL)
            if not t.valid_twin_value(part["value"]):
                raise Rejected(400, ERR_VALUE)
            reason = value_error(value_type, part["value"])
            if reason:
                raise Rejected(400, reason)
    return twins
