"""Every row lock Billing takes, in one place, so the lock order can be read here
(ARCHITECTURE.md): the wallet row, then (written under it) the hold, then an invoice
series counter. A top-up is locked after its wallet; a saved payment method after the
wallets of the auto top-ups that use it; a wallet's auto top-up row after its wallet,
its payment method and its top-up (never before any of them: the runner's claim takes
auto top-up rows alone). Billing never takes a context's lock. Each helper runs inside
the caller's transaction; none opens one."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from iaas.contracts.errors import WalletNotFound

from .models import AutoTopUp, InvoiceSeries, PaymentMethod, TopUp, Wallet


def wallet_lock(wallet_id: uuid.UUID, *, owner_id: int | None = None) -> Wallet:
    """Lock one wallet row, waiting for it (FOR NO KEY UPDATE, so rows that only
    reference it, like new ledger entries, are not blocked). With ``owner_id``, only the
    owner's wallet: another customer's is answered WalletNotFound, like a missing one."""
    rows = Wallet.objects.select_for_update(no_key=True)
    if owner_id is not None:
        rows = rows.filter(owner_id=owner_id)
    try:
        return rows.get(pk=wallet_id)
    except Wallet.DoesNotExist:
        raise WalletNotFound() from None


@dataclass(frozen=True)
class Reserved:
    """What ``wallet_reserve_if_available`` granted, and the wallet as the grant left it
    (the columns the API shows, read from the same statement) with what was unreserved
    before it: enough to tell whether the grant crossed the low-balance threshold and to
    show the wallet, without another statement."""

    granted: int
    wallet: Wallet
    available_before: int


# The wallet's columns the reserve statement returns: what the API shows of it, and the
# auto top-up threshold (a grant that crosses it asks for an automatic top-up).
RESERVED_COLUMNS = (
    "id",
    "owner_id",
    "currency",
    "status",
    "balance",
    "reserved",
    "low_balance_threshold",
    "debt",
    "auto_top_up_below",
    "created_at",
)


def wallet_reserve_if_available(
    wallet_id: uuid.UUID, *, owner_id: int, currency: str, amount: int, minimum: int
) -> Reserved | None:
    """Reserve in one statement: lock the wallet row (FOR NO KEY UPDATE, waiting for it)
    if it is the owner's, in ``currency``, active, with at least ``minimum`` unreserved,
    and add the grant, ``min(amount, unreserved)``, to ``reserved`` (I2: never past the
    balance). Returns the grant with the wallet as it left it, or None when no row passed
    the checks: then nothing is locked or changed, and the caller reads why
    (``wallet_lock``).

    The CTE locks the row first and reads what is unreserved from the version it locked
    (after waiting, the newest), so the grant it returns is exactly what the UPDATE
    added; a plain ``UPDATE ... RETURNING`` shows only the new values, from which a
    grant that took everything cannot be told. PostgreSQL only (``statements.folding``)."""
    table = connection.ops.quote_name(Wallet._meta.db_table)
    returned = ", ".join(f"{table}.{connection.ops.quote_name(column)}" for column in RESERVED_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH locked AS (SELECT id, balance - reserved AS unreserved FROM {table} "  # noqa: S608
            f"WHERE id = %s AND owner_id = %s AND currency = %s AND status = %s "
            f"AND balance - reserved >= %s FOR NO KEY UPDATE) "
            f"UPDATE {table} SET reserved = {table}.reserved + LEAST(%s, locked.unreserved), "
            f"updated_at = %s FROM locked WHERE {table}.id = locked.id "
            f"RETURNING LEAST(%s, locked.unreserved), locked.unreserved, {returned}",
            [wallet_id, owner_id, currency, Wallet.Status.ACTIVE, minimum, amount, timezone.now(), amount],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    granted, unreserved, *columns = row
    values = dict(zip(RESERVED_COLUMNS, columns, strict=True))
    # from_db takes the loaded columns in the model's field order (the rest deferred).
    loaded = [field.attname for field in Wallet._meta.concrete_fields if field.attname in values]
    wallet = Wallet.from_db(connection.alias, loaded, [values[name] for name in loaded])
    return Reserved(granted=granted, wallet=wallet, available_before=unreserved)


def wallets_lock(wallet_ids, *, skip_locked: bool) -> dict[uuid.UUID, Wallet]:
    """Lock the wallets in id order, FOR NO KEY UPDATE, in one statement; with
    ``skip_locked`` only those no other transaction holds (a missing or busy wallet is
    absent from the answer), else waiting for each in turn."""
    rows = (
        Wallet.objects.select_for_update(no_key=True, skip_locked=skip_locked)
        .filter(pk__in=sorted(set(wallet_ids)))
        .order_by("id")
        .only(
            "id",
            "owner_id",
            "currency",
            "status",
            "balance",
            "reserved",
            "ledger_sequence",
            # What the API shows of a wallet, for a LowBalanceReached a batch reserve publishes,
            # and the auto top-up threshold, for its AutoTopUpDue.
            "low_balance_threshold",
            "debt",
            "auto_top_up_below",
            "created_at",
        )
    )
    return {wallet.id: wallet for wallet in rows}


def wallets_try_lock(wallet_ids) -> dict[uuid.UUID, Wallet]:
    """Lock the wallets that no other transaction holds, in id order, SKIP LOCKED (one
    statement): a batch's wallets."""
    return wallets_lock(wallet_ids, skip_locked=True)


def top_up_lock(top_up_id: uuid.UUID) -> TopUp:
    """Lock a top-up row, waiting for it (FOR NO KEY UPDATE), so it is confirmed or
    failed once. Confirming locks its wallet first. Raises TopUp.DoesNotExist."""
    return TopUp.objects.select_for_update(no_key=True).get(pk=top_up_id)


def payment_method_lock(method_id: uuid.UUID, *, owner_id: int) -> PaymentMethod | None:
    """Lock one of the owner's saved payment methods (FOR NO KEY UPDATE, waiting), after the
    wallets whose auto top-ups use it: removing it and choosing it for an auto top-up are
    then one after the other. None when the owner has no such method."""
    return (
        PaymentMethod.objects.select_for_update(no_key=True).filter(pk=method_id, owner_id=owner_id).first()
    )


def auto_top_up_lock(wallet_id: uuid.UUID) -> AutoTopUp | None:
    """Lock a wallet's auto top-up row (FOR NO KEY UPDATE, waiting), after its wallet (and
    its payment method, or its top-up, where the caller holds them). None when the wallet
    has none."""
    return AutoTopUp.objects.select_for_update(no_key=True).filter(pk=wallet_id).first()


def auto_top_ups_claim(*, now: dt.datetime, until: dt.datetime, limit: int) -> list[uuid.UUID]:
    """Claim up to ``limit`` due auto top-ups whose attempt time has come and that no other
    runner holds (a claim until ``until``, a lease: a runner that dies lets go of it when it
    expires). Two statements in the caller's short transaction: the rows are locked SKIP
    LOCKED in attempt order (another runner claiming at the same moment takes others),
    then their claim is written. Takes no wallet lock: the attempt takes it later, alone.
    Returns the claimed wallets' ids."""
    claimable = (
        AutoTopUp.objects.select_for_update(no_key=True, skip_locked=True)
        .filter(due_at__isnull=False, next_attempt_at__lte=now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
        .order_by("next_attempt_at", "wallet_id")
    )
    claimed = list(claimable.values_list("wallet_id", flat=True)[:limit])
    if claimed:
        AutoTopUp.objects.filter(pk__in=claimed).update(claimed_until=until)
    return claimed


def invoice_series_lock(series: str) -> InvoiceSeries:
    """Lock the counter of an invoice number series, the last lock in the lock order
    (FOR NO KEY UPDATE, waiting), creating it first on its first use (INSERT ... ON
    CONFLICT DO NOTHING, then lock): a concurrent first issue creates it only once."""
    InvoiceSeries.objects.bulk_create([InvoiceSeries(series=series)], ignore_conflicts=True)
    return InvoiceSeries.objects.select_for_update(no_key=True).get(pk=series)
