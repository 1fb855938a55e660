"""Kubernetes resource quantities ("100m", "1Gi", "1e3", "500Mi") parsed to exact fractions,
and written back in upstream's canonical form.

Used by the scheduler (requests vs allocatable), the metrics API and the HPA. Results are
cached by value: the scheduler parses every node's allocatable for every pod, and at 1,000
nodes parsing was most of its time."""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction

__all__ = ["parse_quantity", "milli_value", "int_value", "format_quantity", "QuantityError"]

_BINARY = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50,
           "Ei": 2 ** 60}
_DECIMAL = {"n": Fraction(1, 10 ** 9), "u": Fraction(1, 10 ** 6), "m": Fraction(1, 1000),
            "": Fraction(1), "k": Fraction(10 ** 3), "M": Fraction(10 ** 6),
            "G": Fraction(10 ** 9), "T": Fraction(10 ** 12), "P": Fraction(10 ** 15),
            "E": Fraction(10 ** 18)}
_RE = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
                 r"(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+|[numkMGTPE]?)$")


class QuantityError(ValueError):
    pass


@functools.lru_cache(maxsize=4096, typed=True)
def parse_quantity(value: str | int | float | None) -> Fraction:
    """The exact value of a quantity; ints and floats (from JSON) are taken as they are."""
    if value is None:
        return Fraction(0)
    if isinstance(value, bool):
        raise QuantityError(f"quantities must match the regular expression: {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return Fraction(str(value))
    s = str(value).strip()
    m = _RE.match(s)
    if not m:
        raise QuantityError(
            "quantities must match the regular expression "
            "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    number, suffix = Fraction(m.group(1)), m.group(2)
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix and suffix[0] in "eE":
        return number * Fraction(10) ** int(suffix[1:])
    return number * _DECIMAL[suffix]


@functools.lru_cache(maxsize=4096, typed=True)
def milli_value(value: str | int | float | None) -> int:
    """Value in thousandths, rounded up as upstream's MilliValue (cpu in millicores)."""
    return math.ceil(parse_quantity(value) * 1000)


@functools.lru_cache(maxsize=4096, typed=True)
def int_value(value: str | int | float | None) -> int:
    """Value rounded up to a whole number (bytes, pods)."""
    return math.ceil(parse_quantity(value))


def format_quantity(value: Fraction | int, binary: bool = False) -> str:
    """The canonical form upstream serializes a quantity in: the largest suffix that keeps
    the number whole (binary: Ki, Mi... for whole numbers of bytes divisible by 1024;
    otherwise decimal n, u, m, "", k, M...). Values finer than a nano are rounded up."""
    value = Fraction(value)
    sign = "-" if value < 0 else ""
    value = abs(value)
    if binary and value.denominator == 1 and value:
        for suffix, factor in reversed(_BINARY.items()):
            if value % factor == 0:
                return f"{sign}{value // factor}{suffix}"
        if value < 1024 or value % 1000:
            return f"{sign}{value}"
    nanos = math.ceil(value * 10 ** 9)
    if nanos == 0:
        return "0"
    for suffix, factor in sorted(_DECIMAL.items(), key=lambda kv: -kv[1]):
        scaled = Fraction(nanos, 10 ** 9) / factor
        if scaled.denominator == 1:
            return f"{sign}{scaled.numerator}{suffix}"
    raise AssertionError("unreachable: n divides every value in nanos")
