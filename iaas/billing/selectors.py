"""Billing's reads for the customer API: always scoped to the customer."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import QuerySet

from iaas.contracts.errors import NotFound

from .models import LedgerEntry, Wallet


def wallet_list(*, owner_id: int) -> QuerySet[Wallet]:
    return Wallet.objects.filter(owner_id=owner_id).order_by("created_at", "id")


def ledger_entries(*, owner_id: int, wallet_id: uuid.UUID) -> QuerySet[LedgerEntry]:
    """The wallet's ledger; another customer's wallet is NotFound, as a missing one."""
    if not Wallet.objects.filter(pk=wallet_id, owner_id=owner_id).exists():
        raise NotFound("No such wallet.")
    return LedgerEntry.objects.filter(wallet_id=wallet_id)


@dataclass(frozen=True)
class InvoiceLineView:
    description: str
    amount: int
    transaction_date: datetime
    context: str


@dataclass(frozen=True)
class InvoiceView:
    id: uuid.UUID
    number: str
    issued_at: datetime
    period_start: datetime
    period_end: datetime
    currency: str
    total: int
    lines: list[InvoiceLineView] = field(default_factory=list)


def invoice_list(*, owner_id: int) -> list[InvoiceView]:
    """The customer's invoices, newest first.

    Invoices are issued by the operations work (``issue_invoices``, its own issue); until
    Billing has an invoice table no customer has an invoice, so this is empty. Wire it
    to the table here: the API depends only on these DTOs.
    """
    return []


def invoice_get(*, owner_id: int, invoice_id: uuid.UUID) -> InvoiceView:
    for invoice in invoice_list(owner_id=owner_id):
        if invoice.id == invoice_id:
            return invoice
    raise NotFound("No such invoice.")
