"""Every row lock Billing takes, in one place, so the lock order can be read here
(ARCHITECTURE.md): the wallet row, then (written under it) the hold, then an invoice
series counter. A top-up is locked after its wallet. Billing never takes a context's
lock. Each helper runs inside the caller's transaction; none opens one."""

from __future__ import annotations

import uuid

from iaas.contracts.errors import WalletNotFound

from .models import InvoiceSeries, TopUp, Wallet


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


def wallets_lock(wallet_ids, *, skip_locked: bool) -> dict[uuid.UUID, Wallet]:
    """Lock the wallets in id order, FOR NO KEY UPDATE, in one statement; with
    ``skip_locked`` only those no other transaction holds (a missing or busy wallet is
    absent from the answer), else waiting for each in turn."""
    rows = (
        Wallet.objects.select_for_update(no_key=True, skip_locked=skip_locked)
        .filter(pk__in=sorted(set(wallet_ids)))
        .order_by("id")
        .only("id", "owner_id", "currency", "status", "balance", "reserved", "ledger_sequence")
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


def invoice_series_lock(series: str) -> InvoiceSeries:
    """Lock the counter of an invoice number series, the last lock in the lock order
    (FOR NO KEY UPDATE, waiting), creating it first on its first use (INSERT ... ON
    CONFLICT DO NOTHING, then lock): a concurrent first issue creates it only once."""
    InvoiceSeries.objects.bulk_create([InvoiceSeries(series=series)], ignore_conflicts=True)
    return InvoiceSeries.objects.select_for_update(no_key=True).get(pk=series)
