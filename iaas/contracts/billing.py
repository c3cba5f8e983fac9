"""Billing's public face: what Cloud, Hosting and the composition root may ask of it.

Plain data in and out (DTOs), contract errors on refusal; never a model or queryset.
Billing binds its implementation at start-up (``BillingConfig.ready``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Protocol

from .binding import Slot
from .checks import Relation, Violation
from .errors import CurrencyMismatch, DomainError, InsufficientFunds, WalletNotActive, WalletNotFound

__all__ = [
    "BillingContract",
    "CurrencyMismatch",
    "Grant",
    "InsufficientFunds",
    "MoneyInReport",
    "ParkedPaymentFacts",
    "PendingTopUpFacts",
    "ReserveRequest",
    "WalletDebtFacts",
    "WalletNotActive",
    "WalletNotFound",
    "WalletView",
    "bind",
    "check_invariants",
    "hold_totals",
    "hold_totals_relation",
    "money_in_report",
    "request_release",
    "reserve",
    "reserve_batch",
    "wallet_view",
]


@dataclass(frozen=True, slots=True)
class WalletView:
    id: uuid.UUID
    owner_id: int
    currency: str
    status: str


@dataclass(frozen=True, slots=True)
class Grant:
    """Money Billing reserved for a context: add ``amount`` to the context's allowance."""

    reservation_id: uuid.UUID
    wallet_id: uuid.UUID
    context: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """One wallet's part of a batch reservation (``reserve_batch``)."""

    wallet_id: uuid.UUID
    owner_id: int
    currency: str
    amount: int
    minimum: int


@dataclass(frozen=True, slots=True)
class HoldTotals:
    """Billing's side of I4 for one wallet and context."""

    wallet_id: uuid.UUID
    context: str
    granted: int  # every reservation ever granted
    captured: int  # settled charges
    released: int  # applied releases
    outstanding: int  # the hold now


@dataclass(frozen=True, slots=True)
class PendingTopUpFacts:
    """A top-up still waiting for its provider's answer."""

    top_up_id: uuid.UUID
    wallet_id: uuid.UUID
    amount: int
    currency: str
    provider: str
    provider_reference: str
    origin: str
    failed_attempts: int
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ParkedPaymentFacts:
    """A payment the provider says succeeded that matched no top-up, not yet resolved."""

    parked_payment_id: uuid.UUID
    provider: str
    payment_reference: str
    amount: int
    currency: str
    why: str
    parked_at: dt.datetime


@dataclass(frozen=True, slots=True)
class WalletDebtFacts:
    """A wallet owing what a payment reversal could not take."""

    wallet_id: uuid.UUID
    currency: str
    debt: int
    status: str


@dataclass(frozen=True, slots=True)
class MoneyInReport:
    """What reconcile lists about money coming in besides violations: counts, and the
    first rows of each (the oldest pending and parked, the largest debts)."""

    pending_after_seconds: int
    pending_top_ups: int
    oldest_pending_top_ups: tuple[PendingTopUpFacts, ...]
    parked_payments: int
    unresolved_parked_payments: tuple[ParkedPaymentFacts, ...]
    wallets_in_debt: int
    largest_debts: tuple[WalletDebtFacts, ...]

    def as_dict(self) -> dict:
        return {
            "pending_top_ups": {
                "older_than_seconds": self.pending_after_seconds,
                "count": self.pending_top_ups,
                "oldest": [plain(top_up) for top_up in self.oldest_pending_top_ups],
            },
            "parked_payments": {
                "count": self.parked_payments,
                "unresolved": [plain(payment) for payment in self.unresolved_parked_payments],
            },
            "wallets_in_debt": {
                "count": self.wallets_in_debt,
                "largest": [plain(debt) for debt in self.largest_debts],
            },
        }


def plain(facts) -> dict:
    """A facts dataclass as JSON-ready values (ids and moments as strings)."""
    values = {}
    for name in facts.__slots__:
        value = getattr(facts, name)
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, dt.datetime):
            value = value.isoformat()
        values[name] = value
    return values


class BillingContract(Protocol):
    def reserve(
        self,
        *,
        wallet_id: uuid.UUID,
        owner_id: int,
        context: str,
        currency: str,
        amount: int,
        minimum: int,
    ) -> Grant: ...

    def reserve_batch(
        self, *, context: str, requests: list[ReserveRequest]
    ) -> dict[uuid.UUID, Grant | DomainError]: ...

    def wallet_view(self, *, wallet_id: uuid.UUID, owner_id: int | None = None) -> WalletView: ...

    def request_release(self, *, wallet_id: uuid.UUID, requested_by: str) -> bool: ...

    def hold_totals(self) -> list[HoldTotals]: ...

    def hold_totals_relation(self) -> Relation: ...

    def check_invariants(self, *, deep: bool = False) -> dict[str, list[Violation]]: ...

    def money_in_report(self) -> MoneyInReport: ...


_slot: Slot[BillingContract] = Slot("billing")
bind = _slot.bind


def reserve(
    *, wallet_id: uuid.UUID, owner_id: int, context: str, currency: str, amount: int, minimum: int
) -> Grant:
    """Reserve up to ``amount`` (at least ``minimum``) of the wallet's unreserved balance
    for ``context``, inside the caller's transaction, under the wallet's row lock.

    Raises WalletNotFound (no such wallet, or not ``owner_id``'s), CurrencyMismatch,
    WalletNotActive, or InsufficientFunds when less than ``minimum`` is unreserved.
    """
    return _slot.get().reserve(
        wallet_id=wallet_id,
        owner_id=owner_id,
        context=context,
        currency=currency,
        amount=amount,
        minimum=minimum,
    )


def reserve_batch(*, context: str, requests: list[ReserveRequest]) -> dict[uuid.UUID, Grant | DomainError]:
    """A batch run's reservations, one request per wallet, in the caller's transaction:
    what ``reserve`` would do for each, with a constant number of statements. Wallets
    are locked in id order SKIP LOCKED: one that another transaction holds is absent
    from the answer (the caller defers its items to a later pass). A refusal is returned
    as the error ``reserve`` would raise, not raised: the rest of the batch commits."""
    return _slot.get().reserve_batch(context=context, requests=requests)


def wallet_view(*, wallet_id: uuid.UUID, owner_id: int | None = None) -> WalletView:
    """Read-only facts about a wallet. With ``owner_id``, another owner's wallet is
    WalletNotFound, exactly like a wallet that does not exist."""
    return _slot.get().wallet_view(wallet_id=wallet_id, owner_id=owner_id)


def request_release(*, wallet_id: uuid.UUID, requested_by: str) -> bool:
    """Publish ReleaseRequested for the wallet when some other context holds funds for
    it. Returns whether it did. Call it in a transaction that will commit (after the
    refused purchase rolled back)."""
    return _slot.get().request_release(wallet_id=wallet_id, requested_by=requested_by)


def hold_totals() -> list[HoldTotals]:
    """Billing's side of I4: grants, captures, releases and the hold per wallet and context."""
    return _slot.get().hold_totals()


def hold_totals_relation() -> Relation:
    """Billing's side of I4 as SQL, one row per wallet and context that has a hold or a
    reservation: (wallet_id, context, granted, captured, released, outstanding)."""
    return _slot.get().hold_totals_relation()


def check_invariants(*, deep: bool = False) -> dict[str, list[Violation]]:
    """Billing's own invariants (I1, I2, I3, I5, I6, I7, I8, I9, I12), checked in the
    database. ``deep`` also re-derives the holds' running totals and each capture's link to its
    ledger entry from the reservation record, and each charge entry from the settled
    charges it books, row by row (slower)."""
    return _slot.get().check_invariants(deep=deep)


def money_in_report() -> MoneyInReport:
    """What an operator should know of money coming in, read in the caller's snapshot:
    pending top-ups older than IAAS_TOP_UP_PENDING_REPORT_AFTER_SECONDS, unresolved parked
    payments, wallets in debt. Not violations (I12 checks the books)."""
    return _slot.get().money_in_report()
