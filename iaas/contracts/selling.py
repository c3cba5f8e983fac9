"""What each selling context exposes to the rest: read-only totals and checks for
reconciliation (I4, I11), the release of idle allowance, and what an operator's pages
link to. Each context registers itself at start-up (its ``AppConfig.ready()``), and
nothing outside a context names it: callers iterate the registry (``contexts()``) or
look a context up by the name Billing knows it under (``context(name)``)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Protocol

from .checks import Relation, Violation


@dataclass(frozen=True, slots=True)
class AllowanceTotals:
    """A context's side of I4 for one wallet: granted = allowance + charged + released."""

    wallet_id: uuid.UUID
    context: str
    allowance: int
    granted: int
    charged: int
    released: int


@dataclass(frozen=True, slots=True)
class IdleAllowance:
    """Allowance a context holds for a wallet and has not used since ``last_used_at``."""

    wallet_id: uuid.UUID
    context: str
    amount: int
    currency: str
    last_used_at: dt.datetime


@dataclass(frozen=True, slots=True)
class UsageClosed:
    """What a settlement run closed in one context: usage records, the charges they
    became (one ChargesRecorded per wallet), by currency."""

    context: str
    records: int = 0
    charges: int = 0
    wallets: int = 0
    batches: int = 0
    amounts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WalletPage:
    """A page of a context's admin listing its rows about one wallet: the admin URL name
    of a changelist that filters by ``wallet_id`` ("cloud_server_changelist"), and the
    link's text ("Cloud servers")."""

    url_name: str
    title: str


class SellingContext(Protocol):
    name: str  # the name Billing knows it under (holds, ledger entries, subscriptions)
    label: str  # for people ("Cloud")
    app_label: str  # its Django app (permissions, admin URL names)
    wallet_pages: tuple[WalletPage, ...]  # the wallet page's "Follow the money" links, in order
    reserve_ahead: int  # its reserve-ahead chunk when IAAS_RESERVE_AHEAD does not name it

    def allowance_totals(self) -> list[AllowanceTotals]: ...

    def allowance_totals_relation(self) -> Relation:
        """The context's side of I4 as SQL, one row per wallet: (wallet_id, context,
        allowance, granted, charged, released, accrued). ``charged`` is everything spent
        out of the allowance; ``accrued`` the part of it metering spent into usage records
        that no settlement has closed into charges yet (0 for a context that meters
        nothing), so Billing has not been told of it."""
        ...

    def check_usage(self) -> list[Violation]:
        """The context's own rules, checked in its tables: I11 (each usage record agrees
        with its service: the amount under the cap, the hours closed, ``paid_until``) and
        no two charges of one service overlapping in time (a database constraint on
        PostgreSQL, checked row by row on SQLite or when the constraint is missing)."""
        ...

    def release_idle_allowances(self, *, idle_for: dt.timedelta) -> int: ...

    def idle_allowances(self, *, idle_for: dt.timedelta) -> list[IdleAllowance]:
        """Allowances unused for ``idle_for`` (read only)."""
        ...

    def release_idle_allowance(self, *, wallet_id: uuid.UUID, idle_for: dt.timedelta) -> IdleAllowance | None:
        """Release the wallet's allowance if it is still idle (checked again under its
        lock; a wallet another transaction holds is left for the next run). Returns what
        was released. The context decides; Billing is told by AllowanceReleased."""
        ...

    def open_usage_before(self, *, moment: dt.datetime) -> int:
        """How many usage records of months starting before ``moment`` still hold spend
        not closed into charges: Billing does not invoice a month while any does (I8)."""
        ...

    def usage_due(self, *, now: dt.datetime) -> int:
        """Usage records a settlement run at ``now`` would close (read only)."""
        ...

    def close_usage(
        self, *, now: dt.datetime, partition: tuple[int, int] = (0, 1), size: int | None = None
    ) -> UsageClosed:
        """Close the metered usage due at ``now`` in partition (index, count) of the
        wallets into charges, and tell Billing (one ChargesRecorded per wallet): the
        settlement run's context side. Nothing for a context that meters nothing."""
        ...

    def set_allowance_blocked(self, *, wallet_id: uuid.UUID, blocked: bool) -> None:
        """Block (or unblock) the context's allowance for the wallet under its row lock,
        in the caller's transaction: no spend succeeds from a blocked allowance, the
        allowance reserved before a freeze included. Releases still go through."""
        ...


class UnknownContext(LookupError):
    pass


_registry: dict[str, SellingContext] = {}


def register(context: SellingContext) -> None:
    _registry[context.name] = context


def contexts() -> list[SellingContext]:
    """Every registered selling context, by name (a stable order for pages and runs)."""
    return [_registry[name] for name in sorted(_registry)]


def names() -> list[str]:
    return sorted(_registry)


def context(name: str) -> SellingContext:
    try:
        return _registry[name]
    except KeyError:
        raise UnknownContext(
            f"no selling context {name!r}; registered: {', '.join(names()) or 'none'}"
        ) from None


def find(name: str) -> SellingContext | None:
    return _registry.get(name)
