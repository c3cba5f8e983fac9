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


# ISO 4217 minor-unit exponents other than 2 (the supported currencies are a setting).
MINOR_UNIT_EXPONENTS = {
    **dict.fromkeys(["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF"], 0),
    **dict.fromkeys(["UGX", "VND", "VUV", "XAF", "XOF", "XPF"], 0),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
}


def minor_unit_exponent(currency: str) -> int:
    return MINOR_UNIT_EXPONENTS.get(currency, 2)


def format_minor_units(amount: int, currency: str, exponent: int | None = None) -> str:
    """``1250, "EUR"`` -> ``"12.50 EUR"``, ``1250, "JPY"`` -> ``"1,250 JPY"``; integer
    arithmetic only. ``exponent``: the currency's own unless given."""
    exponent = minor_unit_exponent(currency) if exponent is None else exponent
    sign = "-" if amount < 0 else ""
    whole, fraction = divmod(abs(amount), 10**exponent)
    digits = f"{whole:,}" + (f".{fraction:0{exponent}d}" if exponent else "")
    return f"{sign}{digits} {currency}"
