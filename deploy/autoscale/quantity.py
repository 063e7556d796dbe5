"""Kubernetes resource quantities ("1800", "1.5k", "250m", "2Ki") as the integer milli-values the HPA computes with."""

import math
import re
from decimal import Decimal, InvalidOperation

# apimachinery's resource.Quantity grammar: a signed decimal number, then one suffix (binary, decimal or exponent).
QUANTITY_PATTERN = re.compile(
    r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
DECIMAL_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
# The controller works in int64 milli-values and caps what overflows at MaxInt64 (replica_calculator.go).
MAX_INT64 = 2**63 - 1


class InvalidQuantity(ValueError):
    """Raised for a value that is not a Kubernetes quantity."""


def parse_quantity(value: str | int | float) -> Decimal:
    """The exact value of a quantity written as in a manifest (a YAML int or float is taken as its decimal text)."""
    text = str(value).strip()
    match = QUANTITY_PATTERN.match(text)
    if match is None:
        raise InvalidQuantity(f"{value!r} is not a Kubernetes quantity")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        amount = Decimal(number)
    except InvalidOperation as error:  # the pattern admits only decimals; kept for a clear message all the same
        raise InvalidQuantity(f"{value!r} is not a Kubernetes quantity") from error
    if suffix in BINARY_SUFFIXES:
        return amount * BINARY_SUFFIXES[suffix]
    if suffix in DECIMAL_SUFFIXES:
        return amount * DECIMAL_SUFFIXES[suffix]
    return amount.scaleb(int(suffix[1:]))


def to_milli(value: str | int | float) -> int:
    """`Quantity.MilliValue()`: the value in thousandths, rounded up, capped at MaxInt64."""
    milli = math.ceil(parse_quantity(value) * 1000)
    return min(milli, MAX_INT64)
