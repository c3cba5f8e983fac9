"""Billing's public face: what Cloud, Hosting and the composition root may ask of it.

Plain data in and out (DTOs), contract errors on refusal; never a model or queryset.
Billing binds its implementation at start-up (``BillingConfig.ready``).
"""

from __future__ import annotations

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
    "ReserveRequest",
    "WalletNotActive",
    "WalletNotFound",
    "WalletView",
    "bind",
    "check_invariants",
    "hold_totals",
    "hold_totals_relation",
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
    """Billing's own invariants (I1, I2, I3, I5, I6, I7, I8, I9), checked in the database.
    ``deep`` also re-derives the holds' running totals and each capture's link to its
    ledger entry from the reservation record, and each charge entry from the settled
    charges it books, row by row (slower)."""
    return _slot.get().check_invariants(deep=deep)
