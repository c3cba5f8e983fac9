"""Invoices: one per customer and currency and month, for the settled charges of that
month and any earlier one that settled late (I8), numbered without gaps per series (I7).

An invoice is issued in the transaction that takes its number: lock the wallet (which
stands for one customer and currency), take every settled charge not yet on a line and
dated before the period's end, lock the series counter, write the invoice and its lines,
publish InvoiceIssued. A rolled-back issue rolls the counter back: no gap.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from django.db.models import Count, Sum
from django.utils import timezone

from iaas.common.db import retry_transaction
from iaas.common.periods import Month
from iaas.contracts import bus
from iaas.contracts.events import ChargeRecorded, ChargesRecorded, InvoiceIssued

from .models import Invoice, InvoiceLine, InvoiceSeries, LedgerEntry, Wallet
from .services import wallet_lock

SERIES_PREFIX = "INV"
NUMBER_DIGITS = 6


def series_for(issued_at: dt.datetime) -> str:
    """The series an invoice issued at ``issued_at`` is numbered in: one per calendar year
    of issue (numbers run in the order invoices are issued)."""
    return f"{SERIES_PREFIX}-{timezone.localtime(issued_at).year}"


def format_number(series: str, sequence: int) -> str:
    return f"{series}-{sequence:0{NUMBER_DIGITS}d}"


# --- Reads --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvoiceDraft:
    """What a run for a period would put on one wallet's invoice (computed in SQL)."""

    wallet_id: uuid.UUID
    owner_id: int
    currency: str
    lines: int
    total: int


def uninvoiced_charges(period: Month):
    """Settled charges not on any invoice line, dated before the period's end."""
    return LedgerEntry.objects.filter(
        kind=LedgerEntry.Kind.CHARGE,
        transaction_date__lt=period.end,
        invoice_line__isnull=True,
    )


def invoice_drafts(period: Month) -> list[InvoiceDraft]:
    """The invoices a run for ``period`` would issue, one aggregate query: wallets with
    uninvoiced charges dated before the period's end and no invoice for the period yet."""
    invoiced = Invoice.objects.filter(period_start=period.start).values("wallet_id")
    rows = (
        uninvoiced_charges(period)
        .exclude(wallet_id__in=invoiced)
        .values("wallet_id", "wallet__owner_id", "wallet__currency")
        .annotate(lines=Count("id"), total=Sum("amount"))
        .order_by("wallet__owner_id", "wallet__currency")
    )
    return [
        InvoiceDraft(
            wallet_id=row["wallet_id"],
            owner_id=row["wallet__owner_id"],
            currency=row["wallet__currency"],
            lines=row["lines"],
            total=-row["total"],
        )
        for row in rows
    ]


def pending_charges(period: Month) -> int:
    """Charges dated in the period that Billing has not settled yet: recorded by a
    selling context, their ChargeRecorded still waiting in the outbox (pending or
    failed). While there are any, the period's invoices would miss them."""
    dates = []
    for event in bus.undelivered_events([ChargeRecorded, ChargesRecorded]):
        if isinstance(event, ChargesRecorded):
            dates.extend(charge.transaction_date for charge in event.charges)
        else:
            dates.append(event.transaction_date)
    return sum(1 for date in dates if period.start <= date < period.end)


# --- Writes -------------------------------------------------------------------------------


def _series_next_number(series: str) -> int:
    """Take the next number of ``series`` under the counter's row lock (the last lock in
    the lock order). Created on first use with INSERT ... ON CONFLICT DO NOTHING."""
    InvoiceSeries.objects.bulk_create([InvoiceSeries(series=series)], ignore_conflicts=True)
    counter = InvoiceSeries.objects.select_for_update(no_key=True).get(pk=series)
    counter.last_number += 1
    counter.save(update_fields=["last_number"])
    return counter.last_number


@retry_transaction
def invoice_issue(*, wallet_id: uuid.UUID, period: Month) -> Invoice | None:
    """Issue the wallet's invoice for ``period``: every settled charge not yet invoiced
    and dated before the period's end. None when the wallet has an invoice for the
    period already or nothing to invoice: running twice issues nothing new."""
    wallet: Wallet = wallet_lock(wallet_id)
    if Invoice.objects.filter(
        owner_id=wallet.owner_id, currency=wallet.currency, period_start=period.start
    ).exists():
        return None
    entries = list(uninvoiced_charges(period).filter(wallet=wallet).order_by("sequence"))
    if not entries:
        return None
    issued_at = timezone.now()
    series = series_for(issued_at)
    sequence = _series_next_number(series)
    invoice = Invoice.objects.create(
        series=series,
        sequence=sequence,
        number=format_number(series, sequence),
        owner_id=wallet.owner_id,
        wallet=wallet,
        currency=wallet.currency,
        period_start=period.start,
        period_end=period.end,
        issued_at=issued_at,
        total=-sum(entry.amount for entry in entries),
        ledger_sequence=wallet.ledger_sequence,
    )
    InvoiceLine.objects.bulk_create(
        InvoiceLine(
            invoice=invoice,
            ledger_entry=entry,
            description=entry.description,
            amount=-entry.amount,
            transaction_date=entry.transaction_date,
            context=entry.context,
        )
        for entry in entries
    )
    bus.publish(
        InvoiceIssued(
            invoice_id=invoice.id,
            number=invoice.number,
            owner_id=invoice.owner_id,
            currency=invoice.currency,
            total=invoice.total,
        )
    )
    return invoice
