"""Integration events: past-tense facts one context tells the others.

Each is a frozen dataclass with an ``event_id`` and ``occurred_at`` and plain-data
fields, so it survives the trip through the outbox as JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import typing
import uuid
from collections.abc import Callable
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
        return _dumper(type(self))(self)

    @classmethod
    def from_payload(cls, payload: dict) -> Event:
        return _loader(cls)(payload)


def event_from_payload(type_name: str, payload: dict) -> Event:
    return EVENT_TYPES[type_name].from_payload(payload)


# The JSON codec: for each type, a function built once from its type hints (a batch
# delivers thousands of events listing thousands of charges; resolving hints per value
# cost more than the statements that apply them).


def _identity(value):
    return value


def _plain(value):
    """A field typed as plain data (str, int, bool): as it is, unless it holds an id or a
    moment after all."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _str(value):
    return str(value)


def _isoformat(value):
    return value.isoformat()


@functools.cache
def _dumper(cls: type) -> Callable:
    """How to turn a value of the type ``cls`` into plain JSON data."""
    if dataclasses.is_dataclass(cls):
        fields = [(name, _dumper(_value_type(hint))) for name, hint in _field_types(cls).items()]

        def dump_dataclass(value):
            return {name: dump(getattr(value, name)) for name, dump in fields}

        return _optional(dump_dataclass)
    if typing.get_origin(cls) in (tuple, list):
        dump_item = _dumper(typing.get_args(cls)[0])
        return _optional(lambda value: [dump_item(item) for item in value])
    if cls is uuid.UUID:
        return _optional(_str)
    if cls in (dt.datetime, dt.date):
        return _optional(_isoformat)
    return _plain


@functools.cache
def _loader(cls: type) -> Callable:
    """How to read a value of the type ``cls`` back from plain JSON data."""
    if dataclasses.is_dataclass(cls):
        fields = {name: _loader(_value_type(hint)) for name, hint in _field_types(cls).items()}

        def load_dataclass(value):
            return cls(**{name: fields[name](item) for name, item in value.items()})

        return _optional(load_dataclass)
    if typing.get_origin(cls) in (tuple, list):
        container, load_item = typing.get_origin(cls), _loader(typing.get_args(cls)[0])
        return _optional(lambda value: container(load_item(item) for item in value))
    if cls is uuid.UUID:
        return _optional(uuid.UUID)
    if cls is dt.datetime:
        return _optional(dt.datetime.fromisoformat)
    if cls is dt.date:
        return _optional(dt.date.fromisoformat)
    return _identity


def _field_types(cls: type) -> dict:
    """A dataclass's fields and their resolved types (ClassVars are not fields)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _value_type(hint):
    """``X | None`` is ``X`` here (None passes through every codec); ``tuple[X, ...]``
    stays what it is."""
    if typing.get_origin(hint) in (tuple, list):
        return hint
    return next((t for t in typing.get_args(hint) if t is not type(None)), hint)


def _optional(convert: Callable) -> Callable:
    return lambda value: None if value is None else convert(value)


# --- Customers (the shared kernel: auth.User) -----------------------------------------


@dataclass(frozen=True, kw_only=True)
class CustomerRegistered(Event):
    """A customer registered through the API: the address they gave is to be verified."""

    owner_id: int
    username: str
    email: str


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
    # What a customer is told (iaas.notifications): whose it is, and the resource as the
    # API shows it at this moment (None in rows written before these fields existed).
    owner_id: int | None = None
    resource: dict | None = None


@dataclass(frozen=True, kw_only=True)
class ChargeSettled(Event):
    """Billing booked a context's charges of one wallet with one ledger entry (one entry
    per wallet and context per settlement): the context records the entry on each
    charge."""

    wallet_id: uuid.UUID
    context: str
    ledger_entry_id: uuid.UUID
    charge_ids: tuple[uuid.UUID, ...]


@dataclass(frozen=True, kw_only=True)
class ChargeRefunded(Event):
    """Billing gave a settled charge's money back to the wallet."""

    refund_id: uuid.UUID
    wallet_id: uuid.UUID
    charge_id: uuid.UUID | None
    context: str
    amount: int
    currency: str
    # What a customer is told (iaas.notifications): whose it is, and the resource as the
    # API shows it at this moment (None in rows written before these fields existed).
    owner_id: int | None = None
    resource: dict | None = None


@dataclass(frozen=True, kw_only=True)
class InvoiceIssued(Event):
    invoice_id: uuid.UUID
    number: str
    owner_id: int
    currency: str
    total: int
    resource: dict | None = None  # the invoice as the API shows it (iaas.notifications)


@dataclass(frozen=True, kw_only=True)
class TopUpFailed(Event):
    """A top-up ended without money: the provider cancelled or expired it, or an operator
    rejected it. (A failed attempt alone leaves the top-up pending: no event.)"""

    top_up_id: uuid.UUID
    wallet_id: uuid.UUID
    amount: int
    currency: str
    reason: str = ""
    owner_id: int | None = None
    resource: dict | None = None  # the top-up as the API shows it


@dataclass(frozen=True, kw_only=True)
class TopUpReversed(Event):
    """The payment provider took money back from a succeeded top-up (a card refund, a
    dispute): ``taken`` came out of the wallet's available balance, ``debt_added`` is
    what the wallet now owes; ``frozen`` when the wallet is frozen for it (a dispute, or
    debt). The top-up as the API shows it is the resource."""

    top_up_id: uuid.UUID
    wallet_id: uuid.UUID
    kind: str  # "refund" or "dispute"
    amount: int
    taken: int
    debt_added: int
    currency: str
    frozen: bool
    owner_id: int | None = None
    resource: dict | None = None


@dataclass(frozen=True, kw_only=True)
class LowBalanceReached(Event):
    """A wallet's available balance went below the threshold its owner set: published
    once per crossing (re-armed when the available balance is back at or above it)."""

    wallet_id: uuid.UUID
    owner_id: int
    currency: str
    available: int
    threshold: int
    resource: dict | None = None  # the wallet as the API shows it


@dataclass(frozen=True, kw_only=True)
class AutoTopUpDue(Event):
    """A write took a wallet's available balance below its auto top-up threshold: Billing
    marks the wallet's automatic top-up due, and its runner charges the saved card later,
    outside the write's transaction. Internal to Billing (no webhook, no email): published
    with the write, in its outbox statement, so the purchase path pays no statement for it."""

    wallet_id: uuid.UUID
    available: int
    threshold: int


# --- Selling contexts (Cloud, Hosting, Storage) -------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ServiceEndsSoon(Event):
    """A suspended service will be ended (terminated, cancelled, deleted) for non-payment
    at ``ends_at``, about a day from now unless its wallet pays: published once per
    suspension by the selling kit (iaas.spending), for every selling context."""

    context: str  # cloud, hosting, storage
    kind: str  # server, subscription, volume
    service_id: uuid.UUID
    wallet_id: uuid.UUID
    owner_id: int
    ends_at: dt.datetime
    resource: dict | None = None  # the service as the API shows it


@dataclass(frozen=True, kw_only=True)
class RecordedCharge:
    """One immutable charge inside ChargesRecorded (plain data, not an event): what
    Billing books, puts on an invoice line (per ``subject_id`` and month) and refunds."""

    charge_id: uuid.UUID
    amount: int
    transaction_date: dt.datetime
    description: str
    subject_id: uuid.UUID | None = None  # the server, subscription or volume paid for
    period_start: dt.datetime | None = None
    period_end: dt.datetime | None = None


@dataclass(frozen=True, kw_only=True)
class ChargesRecorded(Event):
    """A selling context recorded charges on one wallet: usage closed by a settlement
    run, or one-off purchases (a hosting month, a server's first hour). Billing books
    them with one ledger entry (per wallet and context per delivery batch) and one
    applied-once record per charge, then publishes ChargeSettled. ``amount`` is the
    charges' total (what reconciliation counts as pending while undelivered)."""

    wallet_id: uuid.UUID
    context: str
    currency: str
    amount: int
    charges: tuple[RecordedCharge, ...]


@dataclass(frozen=True, kw_only=True)
class ChargeRecorded(Event):
    """One charge (the form before aggregate settlement; ChargesRecorded replaced it).
    Still delivered, so rows written before the upgrade settle."""

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
    # What a customer is told (iaas.notifications): whose it is, and the resource as the
    # API shows it at this moment (None in rows written before these fields existed).
    owner_id: int | None = None
    resource: dict | None = None


@dataclass(frozen=True, kw_only=True)
class ServerResumed(Event):
    server_id: uuid.UUID
    wallet_id: uuid.UUID
    # What a customer is told (iaas.notifications): whose it is, and the resource as the
    # API shows it at this moment (None in rows written before these fields existed).
    owner_id: int | None = None
    resource: dict | None = None


@dataclass(frozen=True, kw_only=True)
class ServerTerminated(Event):
    server_id: uuid.UUID
    wallet_id: uuid.UUID
    reason: str
    # What a customer is told (iaas.notifications): whose it is, and the resource as the
    # API shows it at this moment (None in rows written before these fields existed).
    owner_id: int | None = None
    resource: dict | None = None


@dataclass(frozen=True, kw_only=True)
class SubscriptionSuspended(Event):
    subscription_id: uuid.UUID
    wallet_id: uuid.UUID
    reason: str
    # The cause that stopped it: unpaid, wallet_blocked or operator (iaas.spending).
    cause: str = ""
    # What a customer is told (iaas.notifications): whose it is, and the resource as the
    # API shows it at this moment (None in rows written before these fields existed).
    owner_id: int | None = None
    resource: dict | None = None


@dataclass(frozen=True, kw_only=True)
class SubscriptionResumed(Event):
    subscription_id: uuid.UUID
    wallet_id: uuid.UUID
    # What a customer is told (iaas.notifications): whose it is, and the resource as the
    # API shows it at this moment (None in rows written before these fields existed).
    owner_id: int | None = None
    resource: dict | None = None


@dataclass(frozen=True, kw_only=True)
class SubscriptionCancelled(Event):
    subscription_id: uuid.UUID
    wallet_id: uuid.UUID
    reason: str = "customer"  # customer, operator:<name>, unpaid
    # What a customer is told (iaas.notifications): whose it is, and the resource as the
    # API shows it at this moment (None in rows written before these fields existed).
    owner_id: int | None = None
    resource: dict | None = None


@dataclass(frozen=True, kw_only=True)
class VolumeSuspended(Event):
    volume_id: uuid.UUID
    wallet_id: uuid.UUID
    reason: str
    # The cause that stopped it: unpaid, wallet_blocked or operator (iaas.spending).
    cause: str = ""
    # What a customer is told (iaas.notifications): whose it is, and the resource as the
    # API shows it at this moment (None in rows written before these fields existed).
    owner_id: int | None = None
    resource: dict | None = None


@dataclass(frozen=True, kw_only=True)
class VolumeResumed(Event):
    volume_id: uuid.UUID
    wallet_id: uuid.UUID
    # What a customer is told (iaas.notifications): whose it is, and the resource as the
    # API shows it at this moment (None in rows written before these fields existed).
    owner_id: int | None = None
    resource: dict | None = None


@dataclass(frozen=True, kw_only=True)
class VolumeResized(Event):
    volume_id: uuid.UUID
    wallet_id: uuid.UUID
    size_gb: int
    previous_size_gb: int


@dataclass(frozen=True, kw_only=True)
class VolumeDeleted(Event):
    volume_id: uuid.UUID
    wallet_id: uuid.UUID
    reason: str

    # What a customer is told (iaas.notifications): whose it is, and the resource as the
    # API shows it at this moment (None in rows written before these fields existed).
    owner_id: int | None = None
    resource: dict | None = None
