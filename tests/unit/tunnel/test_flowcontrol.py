"""Credit-based flow control of connect streams (flowcontrol.py): the window a sender may
fill, the grants a receiver sends back, and the data length a relay counts without decoding."""

from __future__ import annotations

import pytest

from k3py.tunnel.flowcontrol import StreamWindow
from k3py.tunnel.protocol import content_credit, credit_content, data_content, data_length

pytestmark = pytest.mark.unit


def test_a_sender_fills_the_window_and_grants_open_it_again():
    w = StreamWindow(100)
    assert w.room() == 100 and w.sent(60) and w.room() == 40
    assert w.sent(40) and w.room() == 0
    w.granted(25)
    assert w.room() == 25
    w.granted(1000)  # never more room than the window
    assert w.room() == 100


def test_more_than_the_window_in_flight_is_an_overrun():
    w = StreamWindow(100)
    assert w.sent(100)
    assert not w.sent(1)


def test_a_receiver_grants_a_quarter_window_at_a_time():
    w = StreamWindow(100)
    w.sent(100)
    assert w.consumed(10) == 0
    assert w.consumed(15) == 25  # a quarter of the window handed on
    assert w.consumed(24) == 0
    assert w.consumed(51) == 75
    assert w.room() == 100


@pytest.mark.parametrize("data", [b"", b"a", b"ab", b"abc", b"abcd", bytes(range(256)) * 9])
def test_data_length_counts_the_bytes_a_frame_carries(data):
    assert data_length(data_content(data)) == len(data)


@pytest.mark.parametrize("content,n", [
    (credit_content(4096), 4096), ({"bytes": -1}, 0), ({"bytes": "9"}, 0), (None, 0)])
def test_a_credit_frame_grants_a_positive_count_only(content, n):
    assert content_credit(content) == n
