"""Integration events: past-tense facts one context tells the others.

Each is a frozen dataclass with an ``event_id`` and ``occurred_at`` and plain-data
fields, so it survives the trip through the outbox as JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing
import uuid
from dataclasses import dataclass, field

from django.utils import timezone

EVENT_TYPES: dict[str, type[Event]] = {}


@dataclass(frozen=True, kw_only=True)
class Event:
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    occurred_at: dt.datetime = field(default_factory=timezone.now)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        EVENT_TYPES[cls.__name__] = cls

    @classmethod
    def type_name(cls) -> str:
        return cls.__name__

    def to_payload(self) -> dict:
        return {f.name: _dump(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_payload(cls, payload: dict) -> Event:
        hints = typing.get_type_hints(cls)
        return cls(**{name: _load(hints[name], value) for name, value in payload.items()})


def event_from_payload(type_name: str, payload: dict) -> Event:
    return EVENT_TYPES[type_name].from_payload(payload)


def _dump(value):
    if isinstance(value, uuid.UUID | dt.date):  # datetime is a date too
        return value.isoformat() if not isinstance(value, uuid.UUID) else str(value)
    return value


def _load(hint, value):
    if value is None:
        return None
    base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
    if base is uuid.UUID:
        return uuid.UUID(value)
    if base is dt.datetime:
        return dt.datetime.fromisoformat(value)
    if base is dt.date:
        return dt.date.fromisoformat(value)
    return value


# --- Billing -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FundsReserved(Event):
    """Billing reserved part of a wallet's unreserved balance for a selling context."""

    reservation_id: uuid.UUID
    wallet_id: uuid.UUID
    context: str
    amount: int
    currency: str


@dataclass(frozen=True, kw_only=True)
class ReleaseRequested(Event):
    """Billing asks the contexts holding allowance for a wallet to release what is idle
    (a reservation was refused, or money is about to leave the wallet)."""

    wallet_id: uuid.UUID
    requested_by: str  # a context name, or "billing"


@dataclass(frozen=True, kw_only=True)
class WalletToppedUp(Event):
    top_up_id: uuid.UUID
    wallet_id: uuid.UUID
    amount: int
    currency: str


@dataclass(frozen=True, kw_only=True)
class ChargeSettled(Event):
    """Billing booked a context's charge on the ledger."""

    charge_id: uuid.UUID
    wallet_id: uuid.UUID
    context: str
    ledger_entry_id: uuid.UUID


@dataclass(frozen=True, kw_only=True)
class ChargeRefunded(Event):
    """Billing gave a settled charge's money back to the wallet."""

    refund_id: uuid.UUID
    wallet_id: uuid.UUID
    charge_id: uuid.UUID | None
    context: str
    amount: int
    currency: str


@dataclass(frozen=True, kw_only=True)
class InvoiceIssued(Event):
    invoice_id: uuid.UUID
    number: str
    owner_id: int
    currency: str
    total: int


# --- Selling contexts (Cloud, Hosting) ----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ChargeRecorded(Event):
    """A selling context spent part of its allowance on a purchase or a period of use."""

    charge_id: uuid.UUID
    wallet_id: uuid.UUID
    context: str
    amount: int
    currency: str
    transaction_date: dt.datetime
    description: str


@dataclass(frozen=True, kw_only=True)
class AllowanceReleased(Event):
    """A selling context gave unused allowance back; Billing shrinks reserved."""

    release_id: uuid.UUID
    wallet_id: uuid.UUID
    context: str
    amount: int
    currency: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class ServerSuspended(Event):
    server_id: uuid.UUID
    wallet_id: uuid.UUID
    reason: str
    # The cause that stopped it: unpaid, wallet_blocked or operator (iaas.spending).
    cause: str = ""


@dataclass(frozen=True, kw_only=True)
class ServerResumed(Event):
    server_id: uuid.UUID
    wallet_id: uuid.UUID


@dataclass(frozen=True, kw_only=True)
class ServerTerminated(Event):
    server_id: uuid.UUID
    wallet_id: uuid.UUID
    reason: str


@dataclass(frozen=True, kw_only=True)
class SubscriptionSuspended(Event):
    subscription_id: uuid.UUID
    wallet_id: uuid.UUID
    reason: str
    # The cause that stopped it: unpaid, wallet_blocked or operator (iaas.spending).
    cause: str = ""


@dataclass(frozen=True, kw_only=True)
class SubscriptionResumed(Event):
    subscription_id: uuid.UUID
    wallet_id: uuid.UUID


@dataclass(frozen=True, kw_only=True)
class SubscriptionCancelled(Event):
    subscription_id: uuid.UUID
    wallet_id: uuid.UUID
    reason: str = "customer"  # customer, operator:<name>, unpaid
