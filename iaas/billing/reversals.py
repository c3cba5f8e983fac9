"""Money the payment provider takes back from a top-up (a card refund, a dispute), and the
debt it leaves (ARCHITECTURE.md, "Money coming in").

A reversal takes what the wallet has available with a ``reversal`` ledger entry, never
what the services hold and never past zero (I2); what it cannot take is the wallet's
``debt``, which later top-ups pay first. A dispute, or a reversal that leaves debt,
freezes the wallet (through the one freeze service, after this transaction: freezing
locks allowances before the wallet) and tells the operators. Each reversal is applied
once, keyed by what it reverses at the provider (I5)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.core.mail import mail_admins
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from iaas.api.representation import as_shown
from iaas.contracts import bus, wallets
from iaas.contracts.events import TopUpReversed

from . import notices
from .api.serializers import TopUpSerializer
from .ledger import entry_book
from .locks import top_up_lock, wallet_lock
from .models import LedgerEntry, PaymentReversal, TopUp, Wallet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReversalApplied:
    """A reversal as booked (``created`` False when it had been applied before)."""

    reversal: PaymentReversal | None
    created: bool


def reversed_so_far(top_up: TopUp, *, kind: str | None = None) -> int:
    """What reversals took back from ``top_up`` so far (of one kind, or all)."""
    rows = PaymentReversal.objects.filter(top_up=top_up)
    if kind is not None:
        rows = rows.filter(kind=kind)
    return rows.aggregate(total=Sum("amount"))["total"] or 0


def reversal_apply(
    *, top_up_id: uuid.UUID, kind: str, reference: str, amount: int, refunded_total: int | None = None
) -> ReversalApplied:
    """Take ``amount`` back from a succeeded top-up's wallet, once per ``reference``.

    For a card refund the provider tells the charge's refunded total so far
    (``refunded_total``), which only grows: what is taken is that total less the refunds
    applied already, so refunds applied in any order, or told twice, take each cent once.
    Never more than the top-up brought in, all reversals together."""
    with transaction.atomic():
        wallet_id = TopUp.objects.values_list("wallet_id", flat=True).get(pk=top_up_id)
        wallet = wallet_lock(wallet_id)
        top_up = top_up_lock(top_up_id)
        existing = PaymentReversal.objects.filter(provider=top_up.provider, reference=reference).first()
        if existing is not None:
            return ReversalApplied(existing, created=False)
        if refunded_total is not None:
            amount = refunded_total - reversed_so_far(top_up, kind=PaymentReversal.Kind.REFUND)
        amount = min(amount, top_up.amount - reversed_so_far(top_up))
        if top_up.status != TopUp.Status.SUCCEEDED or amount <= 0:
            return ReversalApplied(None, created=False)
        available_before = wallet.available
        taken = max(0, min(amount, wallet.available))
        reversal_id = uuid.uuid4()
        entry = None
        if taken:
            entry = entry_book(
                wallet,
                kind=LedgerEntry.Kind.REVERSAL,
                amount=-taken,
                reference=f"reversal:{reversal_id}",
                description=f"{PaymentReversal.Kind(kind).label} of a top-up via {top_up.provider}",
                source_id=reversal_id,
            )
        if amount > taken:
            wallet.debt += amount - taken
            wallet.save(update_fields=["debt", "updated_at"])
        reversal = PaymentReversal.objects.create(
            id=reversal_id,
            top_up=top_up,
            wallet=wallet,
            provider=top_up.provider,
            kind=kind,
            reference=reference,
            amount=amount,
            taken=taken,
            debt_added=amount - taken,
            ledger_entry=entry,
        )
        alerts = notices.balance_alerts(wallet, available_before=available_before)
        bus.publish(_top_up_reversed(reversal, top_up, wallet), *alerts)
        return ReversalApplied(reversal, created=True)


def _top_up_reversed(reversal: PaymentReversal, top_up: TopUp, wallet: Wallet) -> TopUpReversed:
    """What the owner is told: how much was taken back, how much they owe, and whether the
    wallet is being frozen for it (by the follow-up, once this commits)."""
    return TopUpReversed(
        top_up_id=top_up.id,
        wallet_id=wallet.id,
        kind=reversal.kind,
        amount=reversal.amount,
        taken=reversal.taken,
        debt_added=reversal.debt_added,
        currency=wallet.currency,
        frozen=needs_freeze(reversal),
        owner_id=wallet.owner_id,
        resource=as_shown(TopUpSerializer, top_up),
    )


def needs_freeze(reversal: PaymentReversal) -> bool:
    """A dispute always freezes the wallet (the card's owner says they did not pay); a
    refund only when it left the wallet owing."""
    return reversal.frozen_at is None and (
        reversal.kind == PaymentReversal.Kind.DISPUTE or reversal.debt_added > 0
    )


def reversal_follow_up(*, reversal_id: uuid.UUID) -> None:
    """Freeze the wallet for a reversal that needs it and tell the operators, once; run
    after the reversal's transaction (freezing takes the allowances' locks before the
    wallet's) and again whenever the provider repeats its event, so a crash in between
    is finished by the repeat."""
    reversal = PaymentReversal.objects.select_related("wallet").get(pk=reversal_id)
    if not needs_freeze(reversal):
        return
    if reversal.wallet.status == Wallet.Status.ACTIVE:
        wallets.change_status(
            wallet_id=reversal.wallet_id,
            status=Wallet.Status.FROZEN,
            reason=f"payment {reversal.get_kind_display().lower()} {reversal.reference}",
        )
    PaymentReversal.objects.filter(pk=reversal.pk, frozen_at__isnull=True).update(frozen_at=timezone.now())
    operators_tell(
        f"Wallet {reversal.wallet_id} frozen: {reversal.get_kind_display().lower()}",
        f"The payment provider took back {reversal.wallet.money(reversal.amount)} of top-up "
        f"{reversal.top_up_id} ({reversal.get_kind_display().lower()} {reversal.reference}). "
        f"Taken from the wallet: {reversal.wallet.money(reversal.taken)}; left as debt: "
        f"{reversal.wallet.money(reversal.debt_added)}. The wallet is frozen until an operator "
        f"unfreezes it.",
    )


def debt_pay(wallet: Wallet, top_up: TopUp) -> int:
    """Pay the wallet's debt out of a top-up just credited, as much as the top-up covers:
    a reversal-kind entry beside its credit. The caller holds the wallet's lock and has
    booked the credit. Returns what was paid."""
    paid = min(wallet.debt, top_up.amount)
    if paid <= 0:
        return 0
    entry_book(
        wallet,
        kind=LedgerEntry.Kind.REVERSAL,
        amount=-paid,
        reference=f"debt:{top_up.id}",
        description="Debt from a payment reversal, paid by this top-up",
        transaction_date=top_up.created_at,
        source_id=top_up.id,
    )
    wallet.debt -= paid
    wallet.save(update_fields=["debt", "updated_at"])
    if not wallet.debt:
        transaction.on_commit(
            lambda: operators_tell(
                f"Wallet {wallet.id}: debt paid",
                f"Top-up {top_up.id} paid the last of the wallet's debt. The wallet stays "
                f"{wallet.status} until an operator decides.",
            ),
            robust=True,
        )
    return paid


def operators_tell(subject: str, message: str) -> None:
    """An operator must look: logged as an error (what the alerting watches) and mailed to
    ADMINS where set. Never raises."""
    logger.error("payments: %s. %s", subject, message)
    mail_admins(subject, message, fail_silently=True)
