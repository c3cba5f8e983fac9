"""Plain value types every context shares. Standard library only."""

from __future__ import annotations

import re
from dataclasses import dataclass

CURRENCY_PATTERN = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in integer minor units (cents) of an ISO 4217 currency."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.amount) is not int:
            raise TypeError(f"Money amounts are integers in minor units, not {type(self.amount).__name__}")
        if not CURRENCY_PATTERN.match(self.currency):
            raise ValueError(f"Not an upper-case ISO 4217 code: {self.currency!r}")

    def __str__(self) -> str:
        return format_minor_units(self.amount, self.currency)


def format_minor_units(amount: int, currency: str, exponent: int = 2) -> str:
    """``1250, "EUR"`` -> ``"12.50 EUR"``; integer arithmetic only."""
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**exponent)
    return f"{sign}{whole:,}.{fraction:0{exponent}d} {currency}"
