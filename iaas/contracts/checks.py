"""What an invariant check reports, as plain data."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

INVARIANTS = {
    "I1": "wallet.balance equals the sum of its ledger entries",
    "I2": "0 <= reserved <= balance on every wallet",
    "I3": "wallet.reserved equals the sum of its holds",
    "I4": (
        "per wallet and context, Billing's grants and hold match the context's allowance, "
        "charges and releases"
    ),
    "I5": "every charge settled once, every release applied once",
    "I6": "the ledger, the reservation record and issued invoices are append-only (triggers in place)",
    "I7": "invoice numbers unique and gapless per series",
    "I8": "every settled charge on exactly one invoice line",
    "I9": "ledger sequences contiguous and balance_after chained",
    "I11": (
        "each metered service's usage records agree with it (amount = min(cap + refunded, list), "
        "paid_until where its usage accrued until); no two charges of one service overlap in time"
    ),
    "I12": (
        "money in: every succeeded top-up credited exactly once (its amount), every credit a top-up's; "
        "each reversal and each debt payment booked as recorded, reversals within their top-up; "
        "wallet.debt = debt the reversals left - debt paid by top-ups"
    ),
}


def invariant_order(name: str) -> int:
    """I1, I2, ..., I9, I11, I12 in their numeric order (not I1, I11, I2)."""
    return int(name.removeprefix("I"))


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    wallet_id: uuid.UUID | None
    expected: object
    found: object
    detail: str = ""

    def as_dict(self) -> dict:
        return {
            "invariant": self.invariant,
            "wallet_id": str(self.wallet_id) if self.wallet_id else None,
            "expected": self.expected,
            "found": self.found,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Relation:
    """A read-only SELECT a context lends to reconciliation, with its parameters, so the
    comparison runs in the database (joined, aggregated) and only violations come back.
    Its columns are named in the contract that returns it."""

    sql: str
    params: tuple = ()
