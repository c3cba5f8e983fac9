"""Billing's set-based writes for batch runs: a metering or renewal batch reserves for
all its wallets at once, and a settlement books many wallets' charges at once, each with
a constant number of statements whatever its size.

Lock order (ARCHITECTURE.md, batches): the caller has locked its service rows and its
allowance rows (a settlement has none); here the wallets are locked in id order, SKIP
LOCKED (a wallet a customer or another worker holds is left out: the caller defers its
items), and the holds are written only for wallets locked here, so nobody else can hold
them (every writer of a hold locks its wallet first).
"""

from __future__ import annotations

import uuid

from django.db import IntegrityError
from django.db.models import Exists, OuterRef
from django.utils import timezone

from iaas.common import sql
from iaas.contracts import bus
from iaas.contracts.billing import Grant, ReserveRequest
from iaas.contracts.errors import (
    CurrencyMismatch,
    DomainError,
    InsufficientFunds,
    WalletNotActive,
    WalletNotFound,
)
from iaas.contracts.events import AutoTopUpDue, FundsReserved, LowBalanceReached, ReleaseRequested

from . import notices
from .locks import wallets_try_lock
from .models import Hold, LedgerEntry, Reservation, SettledCharge, Wallet
from .selectors import wallets_existing


def _refusal(wallet: Wallet | None, request: ReserveRequest) -> DomainError | None:
    if wallet is None or wallet.owner_id != request.owner_id:
        return WalletNotFound()
    if wallet.currency != request.currency:
        return CurrencyMismatch()
    if wallet.status != Wallet.Status.ACTIVE:
        return WalletNotActive()
    if wallet.available < request.minimum:
        return InsufficientFunds()
    return None


def funds_reserve_batch(
    *, context: str, requests: list[ReserveRequest]
) -> dict[uuid.UUID, Grant | DomainError]:
    """Grant each request up to its amount (at least its minimum) of its wallet's
    unreserved balance, exactly as ``funds_reserve`` would one by one. The answer maps
    each wallet to its Grant or to the refusal ``reserve`` would raise; a wallet another
    transaction holds is absent (defer its items). Refused wallets on which another
    context holds allowance get a ReleaseRequested, published here: the batch commits."""
    for request in requests:
        if not 0 < request.minimum <= request.amount:
            raise ValueError("reserve needs 0 < minimum <= amount")
    exists = wallets_existing([r.wallet_id for r in requests])
    locked = wallets_try_lock(exists)
    answers: dict[uuid.UUID, Grant | DomainError] = {}
    grants: list[tuple[Wallet, int]] = []
    alerts: list[LowBalanceReached | AutoTopUpDue] = []
    for request in sorted(requests, key=lambda r: r.wallet_id):
        wallet = locked.get(request.wallet_id)
        if wallet is None and request.wallet_id in exists:
            continue  # busy elsewhere: deferred
        refusal = _refusal(wallet, request)
        if refusal is not None:
            answers[request.wallet_id] = refusal
            continue
        available_before = wallet.available
        granted = min(request.amount, available_before)
        wallet.reserved += granted
        grants.append((wallet, granted))
        alerts += notices.balance_alerts(wallet, available_before=available_before)
    reservations = _book_grants(context, grants, alerts)
    for (wallet, granted), reservation in zip(grants, reservations, strict=True):
        answers[wallet.id] = Grant(reservation.id, wallet.id, context, granted, wallet.currency)
    _request_releases(context, [w for w, a in answers.items() if isinstance(a, InsufficientFunds)])
    return answers


def _book_grants(
    context: str, grants: list[tuple[Wallet, int]], alerts: list[LowBalanceReached | AutoTopUpDue]
) -> list[Reservation]:
    """Reserved grows on each wallet and on its hold for ``context``, and each grant is
    recorded: three statements for the whole batch, and one for the events, FundsReserved
    with the LowBalanceReached and AutoTopUpDue of the wallets whose grant crossed a
    threshold."""
    if not grants:
        return []
    now = timezone.now()
    wallet_field = Wallet._meta.get_field
    amounts = sql.rows(
        "granted",
        [("id", wallet_field("id")), ("amount", wallet_field("reserved"))],
        [(wallet.id, granted) for wallet, granted in grants],
    )
    wallets = sql.table(Wallet)
    sql.execute(
        f"UPDATE {wallets} SET reserved = {wallets}.reserved + granted.amount, updated_at = %s "  # noqa: S608
        f"FROM granted WHERE {wallets}.id = granted.id",
        amounts,
        [now],
    )
    holds = sql.table(Hold)
    hold_rows = sql.rows(
        "granted",
        [("wallet_id", wallet_field("id")), ("amount", wallet_field("reserved"))],
        [(wallet.id, granted) for wallet, granted in grants],
    )
    # Growth only: PostgreSQL checks the proposed row's CHECKs before ON CONFLICT.
    sql.execute(
        f"INSERT INTO {holds} (wallet_id, context, amount, granted_total, captured_total, "  # noqa: S608
        f"released_total) SELECT wallet_id, %s, amount, amount, 0, 0 FROM granted WHERE true "
        f"ON CONFLICT (wallet_id, context) DO UPDATE SET amount = {holds}.amount + excluded.amount, "
        f"granted_total = {holds}.granted_total + excluded.granted_total",
        hold_rows,
        [context],
    )
    reservations = Reservation.objects.bulk_create(
        Reservation(
            wallet=wallet, context=context, kind=Reservation.Kind.GRANT, amount=granted, created_at=now
        )
        for wallet, granted in grants
    )
    bus.publish(
        *(
            FundsReserved(
                reservation_id=r.id, wallet_id=w.id, context=context, amount=granted, currency=w.currency
            )
            for (w, granted), r in zip(grants, reservations, strict=True)
        ),
        *alerts,
    )
    return reservations


def _request_releases(context: str, wallet_ids: list[uuid.UUID]) -> None:
    """Refused wallets on which another context holds allowance: ask for it back."""
    if not wallet_ids:
        return
    others_hold = Hold.objects.filter(wallet=OuterRef("pk"), amount__gt=0).exclude(context=context)
    holding = (
        Wallet.objects.filter(pk__in=wallet_ids).filter(Exists(others_hold)).values_list("id", flat=True)
    )
    bus.publish(*(ReleaseRequested(wallet_id=wallet_id, requested_by=context) for wallet_id in holding))


# --- Settlement ----------------------------------------------------------------------------


def settlement_book(*, wallets: list[Wallet], settled: list[tuple[LedgerEntry, list]]) -> None:
    """Write a settlement planned under the wallets' locks (services.charges_settle): the
    entries, with their sequence and balance_after assigned by ``ledger.entry_next``
    (I9), and for each entry its
    ``charges`` (services.ChargeToSettle). Five statements, whatever the batch's size:

    - the charge entries (one INSERT; the chain trigger checks each, I9);
    - the settled charges, one per charge, each naming its entry (one INSERT ... SELECT);
    - the wallets' balance, reserved and sequence counter (one UPDATE ... FROM);
    - the holds, each shrunk by its context's total and its captured total grown by it
      (one UPDATE ... FROM: a decrement, never an upsert, whose CHECKs PostgreSQL would
      test before the conflict);
    - one capture record per entry (one INSERT), keyed by the entry's first charge.
    """
    now = timezone.now()
    sql.insert_instances([entry for entry, _ in settled])
    _settled_charges_insert(settled, now)
    wallet_field = sql.column(Wallet, "balance")
    booked = sql.rows(
        "booked",
        [
            ("id", sql.column(Wallet, "id")),
            ("balance", wallet_field),
            ("reserved", wallet_field),
            ("ledger_sequence", wallet_field),
        ],
        [(w.id, w.balance, w.reserved, w.ledger_sequence) for w in wallets],
    )
    table = sql.table(Wallet)
    sql.execute(
        f"UPDATE {table} SET balance = booked.balance, reserved = booked.reserved, "  # noqa: S608
        f"ledger_sequence = booked.ledger_sequence, updated_at = %s FROM booked WHERE {table}.id = booked.id",
        booked,
        [now],
    )
    captured = sql.rows(
        "captured",
        [
            ("wallet_id", sql.column(Hold, "wallet")),
            ("context", sql.column(Hold, "context")),
            ("amount", sql.column(Hold, "amount")),
        ],
        [(entry.wallet_id, entry.context, -entry.amount) for entry, _ in settled],
    )
    holds = sql.table(Hold)
    # RETURNING, not the row count: SQLite's driver reports none for a statement that
    # starts with WITH.
    shrunk = len(
        sql.fetch(
            f"UPDATE {holds} SET amount = {holds}.amount - captured.amount, "  # noqa: S608
            f"captured_total = {holds}.captured_total + captured.amount FROM captured "
            f"WHERE {holds}.wallet_id = captured.wallet_id AND {holds}.context = captured.context "
            f"RETURNING {holds}.id",
            captured,
        )
    )
    if shrunk != len(settled):
        raise IntegrityError(f"{len(settled) - shrunk} settled context(s) have no hold to capture from")
    sql.insert_instances(
        [
            Reservation(
                wallet_id=entry.wallet_id,
                context=entry.context,
                kind=Reservation.Kind.CAPTURE,
                amount=-entry.amount,
                source_id=entry.source_id,
                ledger_entry=entry,
                created_at=now,
            )
            for entry, _ in settled
        ]
    )


SETTLED_CHARGE_COLUMNS = (
    "charge_id",
    "wallet_id",
    "context",
    "amount",
    "currency",
    "subject_id",
    "description",
    "period_start",
    "period_end",
    "transaction_date",
    "ledger_entry_id",
    "created_at",
)


def _settled_charges_insert(settled: list[tuple[LedgerEntry, list]], now) -> None:
    """One SettledCharge per charge, naming its entry: one INSERT ... SELECT."""
    sql.insert(
        SettledCharge,
        SETTLED_CHARGE_COLUMNS,
        [
            (
                charge.charge_id,
                entry.wallet_id,
                entry.context,
                charge.amount,
                entry.wallet.currency,
                charge.subject_id,
                charge.description[:255],
                charge.period_start,
                charge.period_end,
                charge.transaction_date,
                entry.id,
                now,
            )
            for entry, charges in settled
            for charge in charges
        ],
    )
