"""Kubernetes quantity parsing: suffixes, exponents, rounding to milli and whole units."""

from fractions import Fraction

import pytest

from k3py.api.quantity import QuantityError, int_value, milli_value, parse_quantity

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text,value", [
    ("100m", Fraction(1, 10)), ("1", 1), ("1.5", Fraction(3, 2)), ("1Gi", 2 ** 30),
    ("500Mi", 500 * 2 ** 20), ("1e3", 1000), ("1E-3", Fraction(1, 1000)), ("2k", 2000),
    ("1M", 10 ** 6), ("128974848", 128974848), ("129e6", 129 * 10 ** 6), ("123Ki", 123 * 1024),
    (".5", Fraction(1, 2)), ("0", 0), ("10n", Fraction(1, 10 ** 8)), (3, 3), (0.25, Fraction(1, 4)),
])
def test_parse(text, value) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["", "1Kb", "abc", "1.2.3", "1 Gi", "--1", "1ki"])
def test_invalid(bad) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(bad)


def test_rounding() -> None:
    assert milli_value("100m") == 100
    assert milli_value("1") == 1000
    assert milli_value("0.0001") == 1  # rounded up like MilliValue
    assert milli_value("1n") == 1
    assert int_value("1.5") == 2
    assert int_value("1Ki") == 1024


def test_cached_values_keep_their_type() -> None:
    assert parse_quantity(1) == 1 and parse_quantity("1") == 1
    with pytest.raises(QuantityError):  # True is not the cached 1
        parse_quantity(True)
