"""Billing's set-based writes for batch runs: a metering or renewal batch reserves for
all its wallets at once, with a constant number of statements whatever its size.

Lock order (ARCHITECTURE.md, batches): the caller has locked its service rows and its
allowance rows; here the wallets are locked in id order, SKIP LOCKED (a wallet a
customer or another worker holds is left out: the caller defers its items), and the
holds are written only for wallets locked here, so nobody else can hold them.
"""

from __future__ import annotations

import uuid

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
from iaas.contracts.events import FundsReserved, ReleaseRequested

from .models import Hold, Reservation, Wallet


def wallets_try_lock(wallet_ids) -> dict[uuid.UUID, Wallet]:
    """Lock the wallets that no other transaction holds, in id order (one statement)."""
    rows = (
        Wallet.objects.select_for_update(no_key=True, skip_locked=True)
        .filter(pk__in=sorted(set(wallet_ids)))
        .order_by("id")
        .only("id", "owner_id", "currency", "status", "balance", "reserved")
    )
    return {wallet.id: wallet for wallet in rows}


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
    exists = set(Wallet.objects.filter(pk__in=[r.wallet_id for r in requests]).values_list("id", flat=True))
    locked = wallets_try_lock(exists)
    answers: dict[uuid.UUID, Grant | DomainError] = {}
    grants: list[tuple[Wallet, int]] = []
    for request in sorted(requests, key=lambda r: r.wallet_id):
        wallet = locked.get(request.wallet_id)
        if wallet is None and request.wallet_id in exists:
            continue  # busy elsewhere: deferred
        refusal = _refusal(wallet, request)
        if refusal is not None:
            answers[request.wallet_id] = refusal
            continue
        granted = min(request.amount, wallet.available)
        wallet.reserved += granted
        grants.append((wallet, granted))
    reservations = _book_grants(context, grants)
    for (wallet, granted), reservation in zip(grants, reservations, strict=True):
        answers[wallet.id] = Grant(reservation.id, wallet.id, context, granted, wallet.currency)
    _request_releases(context, [w for w, a in answers.items() if isinstance(a, InsufficientFunds)])
    return answers


def _book_grants(context: str, grants: list[tuple[Wallet, int]]) -> list[Reservation]:
    """Reserved grows on each wallet and on its hold for ``context``, and each grant is
    recorded: three statements for the whole batch."""
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
        )
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
