"""The purchase protocol of a selling context, written once for every context, and
the context's implementation of ``iaas.contracts.selling``: its ``AppConfig`` registers
the spender itself, so the contract's methods are the spender's.

Spend: record the charge and its ChargesRecorded event (one statement, with the
purchase's own last writes), then lock the context's allowance row for the wallet
(creating it on first use from Billing's wallet view), check the owner and currency,
reserve the shortfall from Billing when the allowance is too small, and deduct: all in
the caller's transaction, so a refusal rolls the charge back with the rest. Inside a
reserve-ahead allowance the lock, the checks and the deduction are one conditional
UPDATE, the purchase's last statement. Release: give idle allowance back
and publish AllowanceReleased in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.apps import apps
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Model
from django.utils import timezone

from iaas.common import sql
from iaas.contracts import billing, bus, statements
from iaas.contracts.checks import Relation, Violation
from iaas.contracts.errors import CurrencyMismatch, DomainError, WalletNotActive, WalletNotFound
from iaas.contracts.events import (
    AllowanceReleased,
    ChargeRefunded,
    ChargeSettled,
    ChargesRecorded,
    RecordedCharge,
    ReleaseRequested,
)
from iaas.contracts.selling import AllowanceTotals, IdleAllowance, UsageClosed, WalletPage
from iaas.contracts.types import Money

from . import checks, locks, settlement, usage
from .batch import Partition
from .models import AbstractAllowance, AbstractCharge, AbstractRelease, AbstractUsage

if TYPE_CHECKING:
    from .apps import SellingContextConfig


@dataclass(frozen=True)
class Spender:
    """One selling context's spending mechanism and its ``SellingContext`` (the object
    ``iaas.contracts.selling`` holds for it). What people read about the context (its
    label, its pages, its default reserve-ahead chunk, its service model) is declared on
    its ``AppConfig`` and read from there."""

    context: str
    allowance_model: type[AbstractAllowance]
    charge_model: type[AbstractCharge]
    release_model: type[AbstractRelease]
    usage_model: type[AbstractUsage] | None = None  # metered contexts only
    # How the charge closing a usage record is described (metered contexts only).
    # Names the charges a settlement closes: {record id: description} for its rows.
    describe_usage: Callable[[list], dict[int, str]] | None = None

    # --- locks -------------------------------------------------------------------------

    def allowance_lock(self, *, wallet_id: uuid.UUID, owner_id: int) -> AbstractAllowance:
        """Lock this context's allowance row for the wallet, creating it first when the
        wallet is new here (INSERT ... ON CONFLICT DO NOTHING, then lock)."""
        allowance = locks.allowance_lock(self.allowance_model, wallet_id)
        if allowance is None:
            allowance = self._allowance_create_and_lock(wallet_id=wallet_id, owner_id=owner_id)
        return allowance

    def _allowance_create_and_lock(self, *, wallet_id: uuid.UUID, owner_id: int) -> AbstractAllowance:
        """A wallet's first allowance row here, from Billing's view of the wallet (the
        owner's only: WalletNotFound otherwise), created and locked."""
        wallet = billing.wallet_view(wallet_id=wallet_id, owner_id=owner_id)
        # A wallet frozen (or closed) before its first spend here is blocked here too:
        # the freeze blocked only the allowance rows that existed.
        return locks.allowance_create_and_lock(
            self.allowance_model(
                wallet_id=wallet.id,
                owner_id=wallet.owner_id,
                currency=wallet.currency,
                blocked=wallet.status != "active",
            )
        )

    def allowances_try_lock(
        self, owners: dict[uuid.UUID, int]
    ) -> tuple[dict[uuid.UUID, AbstractAllowance], dict[uuid.UUID, DomainError]]:
        """A batch's allowance rows (``owners``: wallet id -> the services' owner), locked
        in wallet order, SKIP LOCKED: a wallet a purchase or another worker holds is
        absent from the answer (the batch defers it). A wallet new to this context (no
        row yet: rare, a purchase always creates it) gets its row created and locked the
        single-purchase way; one Billing refuses (unknown, not the owner's) comes back
        as a refusal for the batch to record on its services."""
        locked = locks.allowances_try_lock(self.allowance_model, owners)
        missing = set(owners) - set(locked)
        refused: dict[uuid.UUID, DomainError] = {}
        if missing:
            existing = set(
                self.allowance_model.objects.filter(pk__in=missing).values_list("wallet_id", flat=True)
            )
            for wallet_id in sorted(missing - existing):
                try:
                    locked[wallet_id] = self.allowance_lock(wallet_id=wallet_id, owner_id=owners[wallet_id])
                except WalletNotFound as refusal:
                    refused[wallet_id] = refusal
        return locked, refused

    # --- what the registry shows (iaas.contracts.selling) ---------------------------------

    @property
    def name(self) -> str:
        """The name Billing knows the context under (holds, ledger entries, subscriptions)."""
        return self.context

    @property
    def app_label(self) -> str:
        return self.allowance_model._meta.app_label

    @property
    def config(self) -> SellingContextConfig:
        return apps.get_app_config(self.app_label)

    @property
    def label(self) -> str:
        return str(self.config.verbose_name)

    @property
    def wallet_pages(self) -> tuple[WalletPage, ...]:
        return self.config.wallet_pages()

    @property
    def reserve_ahead(self) -> int:
        """The chunk the context registered for when IAAS_RESERVE_AHEAD does not name it."""
        return self.config.reserve_ahead

    @property
    def service_model(self) -> type[Model] | None:
        """The model of a metered context's services, so that reconciliation can hold the
        usage records against them (I11)."""
        metered = self.config.metered_services()
        return metered.service_model if metered is not None else None

    # --- spend -------------------------------------------------------------------------

    def reserve_ahead_chunk(self) -> int:
        """The chunk to reserve beyond a shortfall: IAAS_RESERVE_AHEAD's entry for this
        context, else the default the context registered (0: exactly the shortfall)."""
        chunk = settings.IAAS_RESERVE_AHEAD.get(self.context)
        return self.reserve_ahead if chunk is None else chunk

    def spend(
        self,
        *,
        wallet_id: uuid.UUID,
        owner_id: int,
        price: Money,
        description: str,
        subject_id: uuid.UUID,
        period_start: dt.datetime,
        period_end: dt.datetime,
        transaction_date: dt.datetime | None = None,
        reserve_ahead: int | None = None,
        together: Sequence[statements.Write] = (),
    ) -> AbstractCharge:
        """Pay ``price`` out of this context's allowance, reserving the shortfall from
        Billing. Must run inside the purchase's transaction: on any refusal the caller's
        rows roll back with it. Raises WalletNotFound, CurrencyMismatch, InsufficientFunds.
        ``together``: the purchase's own last writes (a usage record), written in the
        statement that records the charge and its event.

        The charge is written first and the allowance taken last: the allowance row, which
        all of a wallet's purchases in this context share, is then held only for the last
        statements and the commit, not while the charge is written. The charge's rows are
        new (nothing waits for them, and they are not in the lock order); a refusal rolls
        them back with the rest."""
        _check_purchase(price)
        charge = self._record_charge(
            wallet_id=wallet_id,
            owner_id=owner_id,
            price=price,
            description=description,
            subject_id=subject_id,
            period_start=period_start,
            period_end=period_end,
            transaction_date=transaction_date,
            together=together,
        )
        self.spend_allowance(wallet_id=wallet_id, owner_id=owner_id, price=price, reserve_ahead=reserve_ahead)
        return charge

    def spend_allowance(
        self, *, wallet_id: uuid.UUID, owner_id: int, price: Money, reserve_ahead: int | None = None
    ) -> None:
        """Take ``price`` out of this context's allowance for the wallet (reserving the
        shortfall from Billing), recording nothing else: the caller records what was
        bought (a charge, a usage record) in the same transaction."""
        _check_purchase(price)
        chunk = self.reserve_ahead_chunk() if reserve_ahead is None else reserve_ahead
        fast = chunk > 0 and locks.allowance_deduct_if_covered(
            self.allowance_model, wallet_id=wallet_id, owner_id=owner_id, price=price
        )
        if not fast:
            self._spend_reserving_the_shortfall(
                wallet_id=wallet_id, owner_id=owner_id, price=price, chunk=chunk
            )

    def hold_at_least(self, *, wallet_id: uuid.UUID, owner_id: int, currency: str, minimum: int = 1) -> None:
        """A purchase that spends nothing yet (a small volume's first hour rounds to
        nothing): the checks of a spend, and at least ``minimum`` held in the allowance,
        reserved from Billing when it is not (kept, not spent: the hours that follow spend
        it). So an empty, foreign, frozen or other-currency wallet buys nothing, however
        small. In the caller's transaction, under the allowance's lock."""
        allowance = self.allowance_lock(wallet_id=wallet_id, owner_id=owner_id)
        _check_spending(allowance, owner_id=owner_id, currency=currency)
        shortfall = minimum - allowance.amount
        if shortfall > 0:
            grant = billing.reserve(
                wallet_id=wallet_id,
                owner_id=owner_id,
                context=self.context,
                currency=currency,
                amount=max(shortfall, self.reserve_ahead_chunk()),
                minimum=shortfall,
            )
            allowance.amount += grant.amount
            allowance.granted_total += grant.amount
            allowance.last_used_at = timezone.now()
            allowance.save(update_fields=["amount", "granted_total", "last_used_at"])

    def _spend_reserving_the_shortfall(
        self, *, wallet_id: uuid.UUID, owner_id: int, price: Money, chunk: int
    ) -> None:
        """The protocol's full path: lock the allowance row (created on first use), check
        owner and currency, reserve what is missing (at least the shortfall, up to the
        chunk) from Billing, deduct the price. Two statements on the allowance row (the
        lock, the update), two inside Billing."""
        allowance = locks.allowance_lock_to_spend(self.allowance_model, wallet_id)
        if allowance is None:
            # The wallet's first spend here: its row is created from Billing's wallet view.
            created = self._allowance_create_and_lock(wallet_id=wallet_id, owner_id=owner_id)
            allowance = locks.AllowanceToSpend.of(created)
        _check_spending(allowance, owner_id=owner_id, currency=price.currency)
        shortfall = price.amount - allowance.amount
        granted = 0
        if shortfall > 0:
            granted = billing.reserve(
                wallet_id=wallet_id,
                owner_id=owner_id,
                context=self.context,
                currency=price.currency,
                amount=max(shortfall, chunk),
                minimum=shortfall,
            ).amount
        locks.allowance_spend(
            self.allowance_model, wallet_id, granted=granted, price=price.amount, now=timezone.now()
        )

    def _record_charge(
        self,
        *,
        wallet_id: uuid.UUID,
        owner_id: int,
        price: Money,
        description: str,
        subject_id: uuid.UUID,
        period_start: dt.datetime,
        period_end: dt.datetime,
        transaction_date: dt.datetime | None,
        together: Sequence[statements.Write] = (),
    ) -> AbstractCharge:
        """The charge and its ChargesRecorded event (with ``together``), one statement."""
        charge = self.charge_model(
            wallet_id=wallet_id,
            owner_id=owner_id,
            amount=price.amount,
            currency=price.currency,
            description=description[:255],
            subject_id=subject_id,
            period_start=period_start,
            period_end=period_end,
            transaction_date=transaction_date or timezone.now(),
        )
        bus.publish(
            self.charges_recorded(wallet_id=wallet_id, currency=charge.currency, charges=[charge]),
            together=[statements.insert(charge), *together],
        )
        return statements.saved(charge)

    def charges_recorded(
        self, *, wallet_id: uuid.UUID, currency: str, charges: list[AbstractCharge]
    ) -> ChargesRecorded:
        """The event that tells Billing about one wallet's new charges."""
        return ChargesRecorded(
            wallet_id=wallet_id,
            context=self.context,
            currency=currency,
            amount=sum(charge.amount for charge in charges),
            charges=tuple(
                RecordedCharge(
                    charge_id=charge.id,
                    amount=charge.amount,
                    transaction_date=charge.transaction_date,
                    description=charge.description,
                    subject_id=charge.subject_id,
                    period_start=charge.period_start,
                    period_end=charge.period_end,
                )
                for charge in charges
            ),
        )

    # --- block (a frozen or closed wallet) ------------------------------------------------

    def set_allowance_blocked(self, *, wallet_id: uuid.UUID, blocked: bool) -> None:
        """Block (or unblock) this context's allowance for a wallet, under its row lock,
        in the caller's transaction: the first step of freezing a wallet (operations'
        wallet status service), before Billing locks the wallet, so the lock order holds.
        A wallet new here gets its allowance row created blocked."""
        allowance = locks.allowance_lock(self.allowance_model, wallet_id)
        if allowance is None:
            if not blocked:
                return
            wallet = billing.wallet_view(wallet_id=wallet_id)
            allowance = locks.allowance_create_and_lock(
                self.allowance_model(
                    wallet_id=wallet.id, owner_id=wallet.owner_id, currency=wallet.currency, blocked=True
                )
            )
        if allowance.blocked != blocked:
            allowance.blocked = blocked
            allowance.save(update_fields=["blocked"])

    # --- release -----------------------------------------------------------------------

    def release(
        self, *, wallet_id: uuid.UUID, reason: str, amount: int | None = None
    ) -> AbstractRelease | None:
        """Give back ``amount`` (all of it when None) of the allowance for the wallet.
        The context decides; Billing is told by AllowanceReleased."""
        with transaction.atomic():
            allowance = locks.allowance_lock(self.allowance_model, wallet_id)
            if allowance is None or allowance.amount == 0:
                return None
            give_back = allowance.amount if amount is None else min(amount, allowance.amount)
            if give_back <= 0:
                return None
            allowance.amount -= give_back
            allowance.released_total += give_back
            allowance.save(update_fields=["amount", "released_total"])
            release = self.release_model.objects.create(
                wallet_id=wallet_id,
                amount=give_back,
                currency=allowance.currency,
                reason=reason[:100],
            )
            bus.publish(
                AllowanceReleased(
                    release_id=release.id,
                    wallet_id=wallet_id,
                    context=self.context,
                    amount=give_back,
                    currency=allowance.currency,
                    reason=release.reason,
                )
            )
            return release

    def release_on_request(self, event: ReleaseRequested) -> AbstractRelease | None:
        """Billing needs money this context holds idle: give it back. The context stays
        the source of truth; a purchase holding the allowance lock finishes first."""
        if event.requested_by == self.context:
            return None
        return self.release(wallet_id=event.wallet_id, reason="requested by billing")

    def addressed_here(self, event: ChargeRefunded | ChargeSettled) -> bool:
        """Whether an event about a context's charges is about this context's (the bus
        writes a subscription's row only for those)."""
        return event.context == self.context

    def record_refund(self, event: ChargeRefunded) -> None:
        """Billing refunded one of this context's charges: note it on the charge and, for
        metered usage, on the usage record of the charge's month, so the refunded money
        does not count towards the monthly cap. A charge has at most one refund: it is
        noted only while the charge shows none, so a redelivery changes nothing."""
        if event.context != self.context or event.charge_id is None:
            return
        noted = self.charge_model.objects.filter(pk=event.charge_id, refunded_amount=0).update(
            refunded_amount=event.amount
        )
        if not noted or self.usage_model is None:
            return
        charge = self.charge_model.objects.only("subject_id", "period_start").get(pk=event.charge_id)
        self.usage_model.objects.filter(
            service_id=charge.subject_id, month=usage.month_of(charge.period_start)
        ).update(refunded=F("refunded") + event.amount)

    def record_settlement(self, event: ChargeSettled) -> None:
        """Billing booked charges of this context: each records the ledger entry."""
        self.record_settlements([event])

    def record_settlements(self, events: list[ChargeSettled]) -> set:
        """Batch form: every event's charges in one UPDATE. Setting the entry is
        idempotent, so a redelivery changes nothing."""
        rows = [
            (charge_id, event.ledger_entry_id)
            for event in events
            if event.context == self.context
            for charge_id in event.charge_ids
        ]
        field_ = self.charge_model._meta.get_field
        relation = sql.rows("settled", [("id", field_("id")), ("entry", field_("ledger_entry_id"))], rows)
        table = sql.table(self.charge_model)
        sql.execute(
            f"UPDATE {table} SET ledger_entry_id = settled.entry FROM settled "  # noqa: S608
            f"WHERE {table}.id = settled.id",
            relation,
        )
        return set()

    def idle_allowances(self, *, idle_for: dt.timedelta) -> list[IdleAllowance]:
        cutoff = timezone.now() - idle_for
        rows = (
            self.allowance_model.objects.filter(amount__gt=0, last_used_at__lt=cutoff)
            .order_by("wallet_id")
            .values_list("wallet_id", "amount", "currency", "last_used_at")
        )
        return [IdleAllowance(w, self.context, amount, currency, used) for w, amount, currency, used in rows]

    def release_idle_allowance(self, *, wallet_id: uuid.UUID, idle_for: dt.timedelta) -> IdleAllowance | None:
        """Release one wallet's allowance if it is still idle, under its row lock (SKIP
        LOCKED: a purchase holding it is using it, so it is not idle)."""
        cutoff = timezone.now() - idle_for
        with transaction.atomic():
            allowance = locks.idle_allowance_try_lock(self.allowance_model, wallet_id, unused_since=cutoff)
            if allowance is None:
                return None
            released = self.release(wallet_id=wallet_id, reason="idle")
            if released is None:
                return None
            return IdleAllowance(
                wallet_id, self.context, released.amount, released.currency, allowance.last_used_at
            )

    def release_after_batch(self, *, wallet_ids) -> int:
        """A batch run that reserved ahead gives back, when it finishes, the allowance it
        left on the wallets it charged (one wallet per transaction). Reserving exactly
        the shortfall (the default) leaves nothing to give back."""
        if self.reserve_ahead_chunk() <= 0:
            return 0
        return sum(
            1 for wallet_id in sorted(wallet_ids) if self.release(wallet_id=wallet_id, reason="batch end")
        )

    def release_idle_allowances(self, *, idle_for: dt.timedelta) -> int:
        """Release every allowance unused for ``idle_for``: one wallet per transaction."""
        return sum(
            1
            for idle in self.idle_allowances(idle_for=idle_for)
            if self.release_idle_allowance(wallet_id=idle.wallet_id, idle_for=idle_for)
        )

    # --- settlement (metered contexts) ----------------------------------------------------

    def close_usage(
        self, *, now: dt.datetime, partition: tuple[int, int] = (0, 1), size: int | None = None
    ) -> UsageClosed:
        """Close the metered usage due at ``now`` in partition (index, count) of the
        wallets into charges, and tell Billing (one ChargesRecorded per wallet). Nothing
        for a context that meters nothing."""
        if self.usage_model is None:
            return UsageClosed(context=self.context)
        report = settlement.close_partition(
            self, describe=self.describe_usage, now=now, partition=Partition(*partition), size=size
        )
        return UsageClosed(
            context=self.context,
            records=report.records,
            charges=report.charges,
            wallets=report.wallets,
            batches=report.batches,
            amounts=dict(sorted(report.amount.items())),
        )

    # --- reads -------------------------------------------------------------------------

    def open_usage_before(self, *, moment: dt.datetime) -> int:
        if self.usage_model is None:
            return 0
        return self.usage_model.objects.filter(
            month__lt=timezone.localtime(moment).date(), amount__gt=F("closed_amount")
        ).count()

    def usage_due(self, *, now: dt.datetime) -> int:
        """Usage records a settlement run at ``now`` would close (read only)."""
        if self.usage_model is None:
            return 0
        return self.usage_model.objects.filter(close_due_at__lte=now).count()

    def check_usage(self) -> list[Violation]:
        """I11 (each usage record agrees with its service) and no two charges of one
        service overlapping in time, checked in this context's tables."""
        found = checks.charge_overlaps(context=self.context, charge_model=self.charge_model)
        if self.usage_model is not None:
            found += checks.usage_violations(
                context=self.context,
                usage_model=self.usage_model,
                service_model=self.service_model,
            )
        return found

    def allowance_totals(self) -> list[AllowanceTotals]:
        return [
            AllowanceTotals(
                wallet_id=row["wallet_id"],
                context=self.context,
                allowance=row["amount"],
                granted=row["granted_total"],
                charged=row["charged_total"],
                released=row["released_total"],
            )
            for row in self.allowance_model.objects.values(
                "wallet_id", "amount", "granted_total", "charged_total", "released_total"
            ).order_by("wallet_id")
        ]

    def allowance_totals_relation(self) -> Relation:
        """The context's side of I4, one row per wallet. ``accrued`` is what metering spent
        out of the allowance and no settlement has closed into a charge yet (the usage
        records' open amounts): charged, but not yet told to Billing. A usage record of a
        wallet with no allowance row still shows (spend nobody reserved for)."""
        table = connection.ops.quote_name(self.allowance_model._meta.db_table)
        if self.usage_model is None:
            return Relation(
                f"SELECT wallet_id, %s AS context, amount AS allowance, granted_total AS granted, "  # noqa: S608
                f"charged_total AS charged, released_total AS released, CAST(0 AS BIGINT) AS accrued "
                f"FROM {table}",
                (self.context,),
            )
        usage_table = connection.ops.quote_name(self.usage_model._meta.db_table)
        return Relation(
            f"SELECT COALESCE(a.wallet_id, u.wallet_id) AS wallet_id, %s AS context, "  # noqa: S608
            f"COALESCE(a.amount, 0) AS allowance, COALESCE(a.granted_total, 0) AS granted, "
            f"COALESCE(a.charged_total, 0) AS charged, COALESCE(a.released_total, 0) AS released, "
            f"COALESCE(u.accrued, 0) AS accrued "
            f"FROM {table} a FULL OUTER JOIN ("
            f"SELECT wallet_id, CAST(SUM(amount - closed_amount) AS BIGINT) AS accrued FROM {usage_table} "
            f"WHERE amount <> closed_amount GROUP BY wallet_id"
            f") u ON u.wallet_id = a.wallet_id",
            (self.context,),
        )


def _check_purchase(price: Money) -> None:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("spending must run inside the purchase's transaction")
    if price.amount <= 0:
        raise ValueError("a price is a positive amount")


def _check_spending(
    allowance: AbstractAllowance | locks.AllowanceToSpend, *, owner_id: int, currency: str
) -> None:
    """What every spend checks first, under the allowance's lock, reserve or not."""
    # Money held for Alice's wallet is never spent by Mallory naming it, and a USD
    # allowance never pays an EUR price.
    if allowance.owner_id != owner_id:
        raise WalletNotFound()
    # A frozen or closed wallet's allowance is blocked: what was reserved before the
    # freeze is not spent after it (reserve() would refuse only the shortfall).
    if allowance.blocked:
        raise WalletNotActive()
    if allowance.currency != currency:
        raise CurrencyMismatch(f"The price is in {currency}, the wallet holds {allowance.currency}.")
