"""Billing's reads: what the customer API shows (always scoped to the customer), what
Billing's contract answers, and the queries its services ask before or under a lock.
Nothing here writes or locks."""

from __future__ import annotations

import uuid

from django.db.models import Prefetch, QuerySet

from iaas.contracts.errors import NotFound

from .models import AutoTopUp, Hold, Invoice, LedgerEntry, PaymentMethod, SettledCharge, TopUp, Wallet


def wallet_list(*, owner_id: int) -> QuerySet[Wallet]:
    return Wallet.objects.filter(owner_id=owner_id).order_by("created_at", "id")


def ledger_entries(*, owner_id: int, wallet_id: uuid.UUID) -> QuerySet[LedgerEntry]:
    """The wallet's ledger, each charge entry with the ids of the charges it settles (one
    query per page); another customer's wallet is NotFound, as a missing one."""
    if not Wallet.objects.filter(pk=wallet_id, owner_id=owner_id).exists():
        raise NotFound("No such wallet.")
    return LedgerEntry.objects.filter(wallet_id=wallet_id).prefetch_related(_charge_ids("charges"))


def top_up_list(*, owner_id: int, wallet_id: uuid.UUID) -> QuerySet[TopUp]:
    """The wallet's top-ups, newest first, pending and failed ones included (what the
    balance alone cannot show); another customer's wallet is NotFound, as a missing one."""
    if not Wallet.objects.filter(pk=wallet_id, owner_id=owner_id).exists():
        raise NotFound("No such wallet.")
    # The id breaks ties so that pages do not overlap.
    return TopUp.objects.filter(wallet_id=wallet_id).order_by("-created_at", "-id")


def top_up_get(*, owner_id: int, wallet_id: uuid.UUID, top_up_id: uuid.UUID) -> TopUp:
    """One top-up of the customer's wallet; another customer's, or one of another wallet
    (the customer's own included), is NotFound, as a missing one."""
    top_up = top_up_list(owner_id=owner_id, wallet_id=wallet_id).filter(pk=top_up_id).first()
    if top_up is None:
        raise NotFound("No such top-up.")
    return top_up


def _charge_ids(lookup: str) -> Prefetch:
    return Prefetch(
        lookup, queryset=SettledCharge.objects.only("charge_id", "ledger_entry_id", "invoice_line_id")
    )


def invoice_list(*, owner_id: int) -> QuerySet[Invoice]:
    """The customer's invoices, newest first, with their lines and the lines' charges."""
    return (
        Invoice.objects.filter(owner_id=owner_id)
        .prefetch_related("lines", _charge_ids("lines__charges"))
        .order_by("-issued_at", "-sequence", "id")
    )


def invoice_get(*, owner_id: int, invoice_id: uuid.UUID) -> Invoice:
    """One of the customer's invoices; another customer's is NotFound, as a missing one."""
    invoice = invoice_list(owner_id=owner_id).filter(pk=invoice_id).first()
    if invoice is None:
        raise NotFound("No such invoice.")
    return invoice


# --- For Billing's contract and services ---------------------------------------------------


def wallet_summary(*, wallet_id: uuid.UUID, owner_id: int | None = None) -> dict | None:
    """The wallet's id, owner, currency and status (with ``owner_id``, only the owner's
    wallet), or None when there is no such wallet."""
    rows = Wallet.objects.filter(pk=wallet_id)
    if owner_id is not None:
        rows = rows.filter(owner_id=owner_id)
    return rows.values("id", "owner_id", "currency", "status").first()


def wallets_existing(wallet_ids) -> set[uuid.UUID]:
    """Which of these wallets exist (a wallet left out of a SKIP LOCKED lock is busy or
    missing: only a missing one is an error)."""
    return set(Wallet.objects.filter(pk__in=list(wallet_ids)).values_list("id", flat=True))


def holds_elsewhere(*, wallet_id: uuid.UUID, context: str) -> bool:
    """Whether a context other than ``context`` holds funds of the wallet (a hold above
    zero): then a refusal asks for idle allowance back."""
    return Hold.objects.filter(wallet_id=wallet_id, amount__gt=0).exclude(context=context).exists()


def hold_totals() -> list[dict]:
    """Every hold's running totals and outstanding amount, by wallet and context."""
    return list(
        Hold.objects.values(
            "wallet_id", "context", "granted_total", "captured_total", "released_total", "amount"
        ).order_by("wallet_id", "context")
    )


# --- Saved payment methods and automatic top-ups ---------------------------------------------


def payment_method_list(*, owner_id: int) -> QuerySet[PaymentMethod]:
    """The customer's saved payment methods, newest first (removed ones included: the
    API leaves them out unless asked for by status)."""
    # The id breaks ties so that pages do not overlap.
    return PaymentMethod.objects.filter(owner_id=owner_id).order_by("-created_at", "-id")


def payment_method_get(*, owner_id: int, method_id: uuid.UUID) -> PaymentMethod:
    """One of the customer's payment methods; another customer's is NotFound, as a missing one."""
    method = payment_method_list(owner_id=owner_id).filter(pk=method_id).first()
    if method is None:
        raise NotFound("No such payment method.")
    return method


def auto_top_up_get(*, owner_id: int, wallet_id: uuid.UUID) -> AutoTopUp:
    """The automatic top-up of one of the customer's wallets; NotFound when the wallet has
    none, or is another customer's (as a missing one)."""
    auto = (
        AutoTopUp.objects.filter(wallet_id=wallet_id, wallet__owner_id=owner_id)
        .select_related("wallet")
        .first()
    )
    if auto is None:
        raise NotFound("This wallet has no automatic top-up.")
    return auto
