"""Invoices: one per customer and currency and month, for the settled charges of that
month and any earlier one that settled late (I8), numbered without gaps per series (I7).

An invoice is issued in the transaction that takes its number: lock the wallet (which
stands for one customer and currency), take every settled charge not yet on a line and
dated before the period's end, lock the series counter, write the invoice and its lines
(one per service and month; a charge with no service gets a line of its own), set each
charge's line, publish InvoiceIssued. A rolled-back issue rolls the counter back: no gap.

A month is invoiced only once it is complete: every selling context reports its usage
closed into charges through the month's end, and no charge dated in it waits in the
outbox for Billing (``blockers``; the issue_invoices command refuses while there are any).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from dataclasses import dataclass

from django.db import IntegrityError, connection
from django.db.models import F, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncMonth
from django.utils import timezone

from iaas.common import sql
from iaas.common.db import retry_transaction
from iaas.common.periods import Month
from iaas.contracts import bus, selling
from iaas.contracts.events import ChargeRecorded, ChargesRecorded

from . import notices
from .locks import invoice_series_lock, wallet_lock
from .models import Invoice, InvoiceLine, SettledCharge, Wallet

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


def uninvoiced_charges(period: Month) -> QuerySet[SettledCharge]:
    """Settled charges not on any invoice line, dated before the period's end."""
    return SettledCharge.objects.filter(invoice_line__isnull=True, transaction_date__lt=period.end)


# Per wallet, its lines-to-be (one per context, service and month of the charges' dates;
# a charge with no service is a line of its own) counted and summed in the database.
DRAFTS = """
SELECT wallet_ref, owner_ref, currency_ref, COUNT(*), SUM(line_total)
FROM ({lines}) line
GROUP BY wallet_ref, owner_ref, currency_ref
ORDER BY owner_ref, currency_ref
"""


def invoice_drafts(period: Month) -> list[InvoiceDraft]:
    """The invoices a run for ``period`` would issue, one aggregate query: wallets with
    uninvoiced charges dated before the period's end and no invoice for the period yet."""
    invoiced = Invoice.objects.filter(period_start=period.start).values("wallet_id")
    lines = (
        uninvoiced_charges(period)
        .exclude(wallet_id__in=invoiced)
        .annotate(
            wallet_ref=F("wallet_id"),
            owner_ref=F("wallet__owner_id"),
            currency_ref=F("wallet__currency"),
            line_subject=Coalesce("subject_id", "charge_id"),
            line_month=TruncMonth("transaction_date"),
        )
        .values("wallet_ref", "owner_ref", "currency_ref", "context", "line_subject", "line_month")
        .annotate(line_total=Sum("amount"))
        .order_by()
    )
    query, params = lines.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(DRAFTS.format(lines=query), params)
        rows = cursor.fetchall()
    wallet_key = Wallet._meta.get_field("id")
    return [
        InvoiceDraft(
            wallet_id=wallet_key.to_python(wallet_id),
            owner_id=owner_id,
            currency=currency,
            lines=count,
            total=int(total),  # SUM(bigint) is numeric on PostgreSQL
        )
        for wallet_id, owner_id, currency, count, total in rows
    ]


def pending_charges(period: Month) -> int:
    """Charges dated in the period that Billing has not settled yet: recorded by a
    selling context, their ChargesRecorded (or ChargeRecorded) still waiting in the
    outbox (pending or failed). While there are any, the period's invoices would miss
    them."""
    dates = []
    for event in bus.undelivered_events([ChargeRecorded, ChargesRecorded]):
        if isinstance(event, ChargesRecorded):
            dates.extend(charge.transaction_date for charge in event.charges)
        else:
            dates.append(event.transaction_date)
    return sum(1 for date in dates if period.start <= date < period.end)


def open_usage(period: Month) -> dict[str, int]:
    """Per selling context, its usage records of months up to ``period`` that still hold
    spend not closed into charges (each context says so through its contract): money
    spent in the month that no charge carries yet, so no invoice could show it."""
    found = {context.name: context.open_usage_before(moment=period.end) for context in selling.contexts()}
    return {name: count for name, count in found.items() if count}


def blockers(period: Month) -> list[str]:
    """Why ``period`` cannot be invoiced yet (I8): empty when it can."""
    reasons = []
    pending = pending_charges(period)
    if pending:
        reasons.append(
            f"{pending} charge(s) dated in {period} are not settled yet (their ChargesRecorded "
            "events are still in the outbox). Run `manage.py deliver_events` (add "
            "--retry-failed for failed ones)"
        )
    for context, records in sorted(open_usage(period).items()):
        reasons.append(
            f"{context} has {records} usage record(s) of {period} or earlier not closed into charges "
            "yet. Let its settlement run close them"
        )
    return reasons


def _line_description(charges: list[SettledCharge]) -> str:
    first = charges[0].description
    if len(charges) == 1:
        return first
    more = len(charges) - 1
    return f"{first} and {more} more charge{'s' if more > 1 else ''}"[:255]


def _lines(invoice: Invoice, charges: list[SettledCharge]) -> list[tuple[InvoiceLine, list[SettledCharge]]]:
    """One line per context, service and month of the charges' dates (the project's time
    zone); a charge with no service gets a line of its own. Charges come in date order."""
    groups: dict[tuple, list[SettledCharge]] = defaultdict(list)
    for charge in charges:
        subject = charge.subject_id or charge.charge_id
        groups[(charge.context, subject, Month.containing(charge.transaction_date))].append(charge)
    lines = []
    for (context, _, _), grouped in groups.items():
        starts = [c.period_start for c in grouped if c.period_start is not None]
        ends = [c.period_end for c in grouped if c.period_end is not None]
        line = InvoiceLine(
            invoice=invoice,
            context=context,
            subject_id=grouped[0].subject_id,
            description=_line_description(grouped),
            amount=sum(c.amount for c in grouped),
            transaction_date=max(c.transaction_date for c in grouped),
            period_start=min(starts) if starts else None,
            period_end=max(ends) if ends else None,
        )
        lines.append((line, grouped))
    return lines


def _charges_place(lines: list[tuple[InvoiceLine, list[SettledCharge]]]) -> None:
    """Set each charge's line, once (I8): one UPDATE ... FROM for the whole invoice. The
    database lets this column, and only this one, change, and only from NULL."""
    placed = sql.rows(
        "placed",
        [
            ("charge_id", sql.column(SettledCharge, "charge_id")),
            ("line_id", sql.column(InvoiceLine, "id")),
        ],
        [(charge.charge_id, line.id) for line, charges in lines for charge in charges],
    )
    table = sql.table(SettledCharge)
    expected = sum(len(charges) for _, charges in lines)
    updated = len(  # RETURNING: SQLite's driver counts no rows of a statement led by WITH
        sql.fetch(
            f"UPDATE {table} SET invoice_line_id = placed.line_id FROM placed "  # noqa: S608
            f"WHERE {table}.charge_id = placed.charge_id AND {table}.invoice_line_id IS NULL "
            f"RETURNING {table}.charge_id",
            placed,
        )
    )
    if updated != expected:
        raise IntegrityError(f"{expected - updated} charge(s) were put on an invoice line meanwhile")


# --- Writes -------------------------------------------------------------------------------


def _series_next_number(series: str) -> int:
    """Take the next number of ``series`` under the counter's row lock (the last lock in
    the lock order). Created on first use with INSERT ... ON CONFLICT DO NOTHING."""
    counter = invoice_series_lock(series)
    counter.last_number += 1
    counter.save(update_fields=["last_number"])
    return counter.last_number


@retry_transaction
def invoice_issue(*, wallet_id: uuid.UUID, period: Month) -> Invoice | None:
    """Issue the wallet's invoice for ``period``: every settled charge not yet invoiced
    and dated before the period's end, on lines per service and month. None when the
    wallet has an invoice for the period already or nothing to invoice: running twice
    issues nothing new. (Whether the month may be invoiced is ``blockers``' question.)"""
    wallet: Wallet = wallet_lock(wallet_id)
    if Invoice.objects.filter(
        owner_id=wallet.owner_id, currency=wallet.currency, period_start=period.start
    ).exists():
        return None
    charges = list(uninvoiced_charges(period).filter(wallet=wallet).order_by("transaction_date", "charge_id"))
    if not charges:
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
        total=sum(charge.amount for charge in charges),
        ledger_sequence=wallet.ledger_sequence,
    )
    lines = _lines(invoice, charges)
    InvoiceLine.objects.bulk_create([line for line, _ in lines])
    _charges_place(lines)
    bus.publish(notices.invoice_issued(invoice))
    return invoice
