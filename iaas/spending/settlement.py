"""The settlement run's context side: close what metered services accrued into
immutable charges, and tell Billing with one ChargesRecorded per wallet, so Billing
books one ledger entry per wallet and context (ARCHITECTURE.md, "Usage accrues in the
context; money moves in Billing in aggregate").

A usage record is due for closing at ``close_due_at``: the cadence after its first
accrual since the last close (IAAS_SETTLE_USAGE_EVERY_HOURS), its month's end, or the
service's end, whichever comes first. Per batch, one short transaction:
1. lock the partition's next due usage records in (wallet, record) order, SKIP LOCKED
   (metering waits for them at most one batch; settlement waits on nobody);
2. read the services' names for the charges' descriptions (the context says how);
3. insert one charge per record with money not yet closed (its span
   ``[closed_until, accrued_until)``, dated at its start: inside the record's month);
4. mark the records closed up to what they hold;
5. publish one ChargesRecorded per wallet.
Money does not move here: it was spent out of the allowance as it accrued. Closing is
what Billing books.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from iaas.common import sql
from iaas.common.faults import pause_point
from iaas.contracts import bus
from iaas.contracts.events import ChargesRecorded, RecordedCharge

from . import batch
from .locks import usage_due_try_lock
from .models import AbstractUsage

logger = logging.getLogger(__name__)

# How a context names the charge closing a usage record: {record id: description}.
# It gets the rows locks.usage_due_try_lock returned (the fields of locks.DUE_FIELDS as
# attributes).
Describe = Callable[[list], dict[int, str]]


@dataclass(slots=True)
class CloseReport:
    records: int = 0
    charges: int = 0
    amount: dict = field(default_factory=dict)  # currency -> minor units
    wallets: int = 0
    batches: int = 0
    last: tuple[uuid.UUID, int] | None = None
    exhausted: bool = False

    def add(self, other: CloseReport) -> None:
        self.records += other.records
        self.charges += other.charges
        self.wallets += other.wallets
        self.batches += other.batches
        for currency, amount in other.amount.items():
            self.amount[currency] = self.amount.get(currency, 0) + amount


def close_batch(
    spender,
    *,
    describe: Describe,
    now: dt.datetime,
    partition: batch.Partition,
    after: tuple[uuid.UUID, int] | None,
    size: int,
) -> CloseReport:
    """One batch of the settlement run (see the module's docstring)."""
    usage_model = spender.usage_model
    report = CloseReport(batches=1)
    with transaction.atomic():
        batch.start_batch_transaction()
        logger.info("settlement batch started: %s partition %s after %s", spender.context, partition, after)
        records = usage_due_try_lock(usage_model, now=now, partition=partition, after=after, limit=size)
        report.exhausted = len(records) < size
        if not records:
            return report
        report.last = (records[-1].wallet_id, records[-1].id)
        report.records = len(records)
        open_records = [r for r in records if r.amount > r.closed_amount]
        descriptions = describe(open_records) if open_records else {}
        charges = [
            (
                record,
                RecordedCharge(
                    charge_id=uuid.uuid4(),
                    amount=record.amount - record.closed_amount,
                    transaction_date=record.closed_until,
                    description=descriptions.get(record.id, "Usage")[:255],
                    subject_id=record.service_id,
                    period_start=record.closed_until,
                    period_end=record.accrued_until,
                ),
            )
            for record in open_records
        ]
        _insert_charges(spender.charge_model, charges, now=now)
        _mark_closed(usage_model, records, now=now)
        by_wallet: dict[tuple[uuid.UUID, str], list[RecordedCharge]] = {}
        for record, charge in charges:
            by_wallet.setdefault((record.wallet_id, record.currency), []).append(charge)
            report.amount[record.currency] = report.amount.get(record.currency, 0) + charge.amount
        bus.publish(
            *(
                ChargesRecorded(
                    wallet_id=wallet_id,
                    context=spender.context,
                    currency=currency,
                    amount=sum(charge.amount for charge in wallet_charges),
                    charges=tuple(wallet_charges),
                )
                for (wallet_id, currency), wallet_charges in sorted(
                    by_wallet.items(), key=lambda kv: str(kv[0][0])
                )
            )
        )
        report.charges = len(charges)
        report.wallets = len(by_wallet)
        pause_point("settlement_batch")
    logger.info("settlement batch committed: %s, %d record(s)", spender.context, report.records)
    return report


def _insert_charges(charge_model, charges: list[tuple], *, now: dt.datetime) -> None:
    """The batch's new charges, one INSERT from arrays: (usage row, RecordedCharge)
    pairs, the row giving whose and in what currency."""
    sql.insert(
        charge_model,
        (
            "id",
            "wallet_id",
            "owner_id",
            "amount",
            "currency",
            "description",
            "subject_id",
            "period_start",
            "period_end",
            "transaction_date",
            "created_at",
            "refunded_amount",
        ),
        [
            (
                charge.charge_id,
                record.wallet_id,
                record.owner_id,
                charge.amount,
                record.currency,
                charge.description,
                charge.subject_id,
                charge.period_start,
                charge.period_end,
                charge.transaction_date,
                now,
                0,
            )
            for record, charge in charges
        ],
    )


def _mark_closed(usage_model: type[AbstractUsage], records: list, *, now: dt.datetime) -> None:
    """The records are closed up to what they hold: one UPDATE. (The batch holds their
    locks, so what it read is what they hold.)"""
    field_ = usage_model._meta.get_field
    relation = sql.rows(
        "closing",
        [
            ("id", field_("id")),
            ("closed_amount", field_("closed_amount")),
            ("closed_hours", field_("closed_hours")),
            ("closed_until", field_("closed_until")),
        ],
        [(r.id, r.amount, r.hours, r.accrued_until) for r in records],
    )
    table = sql.table(usage_model)
    sql.execute(
        f"UPDATE {table} SET closed_amount = closing.closed_amount, closed_hours = closing.closed_hours, "  # noqa: S608
        f"closed_until = closing.closed_until, close_due_at = NULL, updated_at = %s "
        f"FROM closing WHERE {table}.id = closing.id",
        relation,
        [now],
    )


def close_partition(
    spender, *, describe: Describe, now: dt.datetime, partition: batch.Partition, size: int | None = None
) -> CloseReport:
    """A worker's share of a settlement run: its partition walked batch by batch, then
    once more for records that were locked the first time (metering held them)."""
    size = size or settings.IAAS_BATCH_SIZE
    total = CloseReport()
    for _ in range(2):
        after = None
        while True:
            report = close_batch(
                spender, describe=describe, now=now, partition=partition, after=after, size=size
            )
            total.add(report)
            if report.exhausted or report.last is None:
                break
            after = report.last
    return total
