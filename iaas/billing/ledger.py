"""The locked-ledger basics: the few writes every money movement is made of (append a
ledger entry, save a wallet's money, grow or shrink a hold, record a reservation and
check its applied-once marker), each for a caller that already holds the right lock.

None of these opens a transaction or takes a lock of its own except the hold row its
statement touches (``locks.py`` holds the row locks): the caller locks the wallet first
(``locks.wallet_lock`` or ``locks.wallets_lock``), then calls these, so the sequence
and ``balance_after`` of each entry (I9), the balance as the sum of entries (I1),
``reserved`` within the balance (I2) and ``reserved`` as the sum of the holds (I3) are
decided by one writer at a time."""

from __future__ import annotations

import datetime as dt
import uuid

from django.db import IntegrityError, connection
from django.db.models import F
from django.utils import timezone

from iaas.common import sql
from iaas.contracts import statements

from .models import Hold, LedgerEntry, Reservation, SettledCharge, Wallet

# The totals a hold's shrink moves, by the kind of reservation record that shrinks it.
SHRINK_TOTALS = {Reservation.Kind.CAPTURE: "captured_total", Reservation.Kind.RELEASE: "released_total"}


def entry_next(
    wallet: Wallet,
    *,
    kind: str,
    amount: int,
    reference: str,
    description: str,
    transaction_date: dt.datetime | None = None,
    context: str = "",
    source_id: uuid.UUID | None = None,
    created_by_id: int | None = None,
) -> LedgerEntry:
    """The wallet's next ledger entry, not yet saved: its sequence and balance_after are
    assigned here, and the wallet's balance and sequence counter move in memory (I1, I9).
    The caller holds the wallet's lock and saves both (``entry_book``, or a batch's
    set-based writes)."""
    wallet.ledger_sequence += 1
    wallet.balance += amount
    now = timezone.now()
    return LedgerEntry(
        wallet=wallet,
        sequence=wallet.ledger_sequence,
        kind=kind,
        amount=amount,
        balance_after=wallet.balance,
        transaction_date=transaction_date or now,
        posted_at=now,
        description=description[:255],
        reference=reference,
        context=context,
        source_id=source_id,
        created_by_id=created_by_id,
    )


def entry_book(wallet: Wallet, **fields) -> LedgerEntry:
    """Append the wallet's next ledger entry (fields as ``entry_next``) and save the
    wallet's money: two statements, entry first. The caller holds the wallet's lock."""
    entry = entry_next(wallet, **fields)
    entry.save(force_insert=True)
    wallet_money_save(wallet)
    return entry


def wallet_money_save(wallet: Wallet) -> None:
    """Save the wallet's balance, reserved and ledger sequence counter as the caller
    moved them. The caller holds the wallet's lock."""
    wallet.save(update_fields=["balance", "reserved", "ledger_sequence", "updated_at"])


def hold_grow_write(*, wallet_id: uuid.UUID, context: str, amount: int) -> statements.Write:
    """Grow ``context``'s hold on the wallet by a grant, and its granted total with it
    (created on first use: INSERT ... ON CONFLICT DO UPDATE, which locks the hold row),
    as a write to run together with the reservation's. The caller holds the wallet's
    lock, which comes before the hold in the lock order."""
    if amount <= 0:
        raise ValueError("a hold grows by a positive grant")
    # PostgreSQL checks the proposed row's CHECKs before ON CONFLICT, so only growth
    # goes through the upsert.
    table = connection.ops.quote_name(Hold._meta.db_table)
    wallet_key = Hold._meta.get_field("wallet").target_field.get_db_prep_value(wallet_id, connection)
    return statements.Write(
        f"INSERT INTO {table} (wallet_id, context, amount, granted_total, captured_total, "  # noqa: S608
        f"released_total) VALUES (%s, %s, %s, %s, 0, 0) "
        f"ON CONFLICT (wallet_id, context) DO UPDATE SET amount = {table}.amount + EXCLUDED.amount, "
        f"granted_total = {table}.granted_total + EXCLUDED.granted_total",
        (wallet_key, context, amount, amount),
    )


def hold_shrink(*, wallet_id: uuid.UUID, context: str, amount: int, kind: str) -> None:
    """Shrink ``context``'s hold on the wallet by a capture or a release (``kind``),
    growing the matching total in the same UPDATE (a decrement, never an upsert). The
    caller holds the wallet's lock; the UPDATE locks the hold row. The hold's CHECKs
    refuse a hold going negative or totals that do not add up."""
    if amount <= 0:
        raise ValueError("a hold shrinks by a positive capture or release")
    total = SHRINK_TOTALS[kind]
    updated = Hold.objects.filter(wallet_id=wallet_id, context=context).update(
        amount=F("amount") - amount, **{total: F(total) + amount}
    )
    if updated != 1:
        raise IntegrityError(f"no {context} hold on wallet {wallet_id} to shrink")


def reservation_record(
    *, wallet: Wallet, context: str, kind: str, amount: int, source_id: uuid.UUID | None = None
) -> Reservation:
    """Record a grant, capture or release on the wallet. With ``source_id`` (a release's
    id) it is that event's applied-once marker (I5). The caller holds the wallet's lock."""
    return Reservation.objects.create(
        wallet=wallet, context=context, kind=kind, amount=amount, source_id=source_id
    )


def reservation_applied(*, kind: str, source_id: uuid.UUID) -> bool:
    """Whether the event ``source_id`` (a release's id) was applied already (I5). Asked
    under the wallet's lock, so a concurrent delivery of the same event waits and then
    sees the first one's marker."""
    return Reservation.objects.filter(kind=kind, source_id=source_id).exists()


def charges_applied(charge_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these charges Billing has settled already (I5): their SettledCharge rows
    are the applied-once markers. One query on SettledCharge's key, whatever the number
    of charges. Asked under the charges' wallets' locks."""
    incoming = sql.rows(
        "incoming", [("charge_id", sql.column(SettledCharge, "charge_id"))], [(i,) for i in charge_ids]
    )
    settled = sql.table(SettledCharge)
    rows = sql.fetch(
        f"SELECT s.charge_id FROM {settled} s JOIN incoming ON s.charge_id = incoming.charge_id",  # noqa: S608
        incoming,
    )
    field = sql.column(SettledCharge, "charge_id")
    return {field.to_python(charge_id) for (charge_id,) in rows}
