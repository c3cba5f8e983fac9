"""Billing's reads for the customer API: always scoped to the customer."""

from __future__ import annotations

import uuid

from django.db.models import Prefetch, QuerySet

from iaas.contracts.errors import NotFound

from .models import Invoice, LedgerEntry, SettledCharge, Wallet


def wallet_list(*, owner_id: int) -> QuerySet[Wallet]:
    return Wallet.objects.filter(owner_id=owner_id).order_by("created_at", "id")


def ledger_entries(*, owner_id: int, wallet_id: uuid.UUID) -> QuerySet[LedgerEntry]:
    """The wallet's ledger, each charge entry with the ids of the charges it settles (one
    query per page); another customer's wallet is NotFound, as a missing one."""
    if not Wallet.objects.filter(pk=wallet_id, owner_id=owner_id).exists():
        raise NotFound("No such wallet.")
    return LedgerEntry.objects.filter(wallet_id=wallet_id).prefetch_related(_charge_ids("charges"))


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
