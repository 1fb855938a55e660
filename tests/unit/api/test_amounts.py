"""The one check of counts and measures read from another process (k3py/api/amounts.py): a
number >= 0 and below 2**63, never a boolean, NaN or an infinity; and its three users (usage
reports, MQTT summaries, a peer's tunnel figures) refusing 2**63 with their own words."""

from __future__ import annotations

import pytest

from k3py.api.amounts import AMOUNT_LIMIT, amount, count, is_amount
from k3py.server.edge.peertunnels import TunnelReport
from k3py.tunnel.mqtt import MqttSummary
from k3py.tunnel.protocol import Usage

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("v", "ok"), [
    (0, True), (0.0, True), (1.5, True), (2 ** 63 - 1, True), (float(2 ** 62), True),
    (2 ** 63, False), (float(2 ** 63), False), (2 ** 64, False), (1e26, False), (-1, False),
    (-0.5, False), (float("nan"), False), (float("inf"), False), (True, False), (False, False),
    ("1", False), (None, False), ([], False),
])
def test_an_amount_is_a_number_from_0_to_below_2_63(v, ok):
    assert is_amount(v) is ok
    if ok:
        assert amount(v, "x") == float(v) and count(v, "x") == int(v)
        return
    for check in (amount, count):
        with pytest.raises(ValueError, match=r"^rate must be a number >= 0 and < 2\*\*63$"):
            check(v, "rate")


def test_count_keeps_a_large_whole_number_exact():
    assert count(2 ** 63 - 1, "n") == 2 ** 63 - 1  # not through a float (2**53 and above)
    assert AMOUNT_LIMIT == 2 ** 63


def test_each_user_refuses_2_63_in_its_own_words():
    with pytest.raises(ValueError, match=r"memory must be a number >= 0 and < 2\*\*63"):
        Usage.from_content({"cpu": 1, "memory": 2 ** 63})
    summary = {"timestamp": 1.0, "window": 10.0, "rate": 0.0, "received": 2 ** 63,
               "published": 0, "errors": 0, "topics": []}
    with pytest.raises(ValueError, match=r"received must be a number >= 0 and < 2\*\*63"):
        MqttSummary.from_content(summary)
    figures = {"connected": True, "reconnects": 0, "queued": 0}
    with pytest.raises(ValueError, match=r'"queued" is a count: a whole number >= 0 and < 2'):
        TunnelReport.from_content({**figures, "queued": 2 ** 63})
    with pytest.raises(ValueError, match=r'"queued" is a count'):
        TunnelReport.from_content({**figures, "queued": 1.5})
    with pytest.raises(ValueError, match=r'"rttMs" is a number >= 0 and < 2\*\*63, or null'):
        TunnelReport.from_content({**figures, "rttMs": 1e19})
    assert TunnelReport.from_content({**figures, "queued": 2 ** 63 - 1}).queued == 2 ** 63 - 1
