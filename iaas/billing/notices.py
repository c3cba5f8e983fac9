"""What Billing tells a customer: the events iaas.notifications turns into webhooks and
emails, each with its owner and the thing as the API shows it at that moment
(iaas.api.representation), so a webhook's body is what a GET answers; and what a falling
balance asks of Billing itself (an automatic top-up). The services build them here under
their locks and publish them in their own transactions."""

from __future__ import annotations

from iaas.api.representation import as_shown
from iaas.contracts.events import (
    AutoTopUpDue,
    ChargeRefunded,
    InvoiceIssued,
    LowBalanceReached,
    TopUpFailed,
    WalletToppedUp,
)

from . import selectors
from .api.serializers import InvoiceSerializer, RefundSerializer, TopUpSerializer, WalletSerializer
from .models import Invoice, Refund, TopUp, Wallet


def wallet_topped_up(top_up: TopUp, *, owner_id: int) -> WalletToppedUp:
    """A succeeded top-up, as the POST that made it answers it."""
    return WalletToppedUp(
        top_up_id=top_up.id,
        wallet_id=top_up.wallet_id,
        amount=top_up.amount,
        currency=top_up.currency,
        owner_id=owner_id,
        resource=as_shown(TopUpSerializer, top_up),
    )


def top_up_failed(top_up: TopUp, *, owner_id: int, reason: str) -> TopUpFailed:
    return TopUpFailed(
        top_up_id=top_up.id,
        wallet_id=top_up.wallet_id,
        amount=top_up.amount,
        currency=top_up.currency,
        reason=reason,
        owner_id=owner_id,
        resource=as_shown(TopUpSerializer, top_up),
    )


def charge_refunded(refund: Refund) -> ChargeRefunded:
    """``refund`` with its wallet and charge loaded (as ``charge_refund`` has them)."""
    return ChargeRefunded(
        refund_id=refund.id,
        wallet_id=refund.wallet_id,
        charge_id=refund.charge_id,
        context=refund.charge.context,
        amount=refund.amount,
        currency=refund.wallet.currency,
        owner_id=refund.wallet.owner_id,
        resource=as_shown(RefundSerializer, refund),
    )


def invoice_issued(invoice: Invoice) -> InvoiceIssued:
    """The invoice read back as GET /invoices/{id}/ reads it (its lines and their
    charges: three queries), in the transaction that issues it."""
    shown = selectors.invoice_get(owner_id=invoice.owner_id, invoice_id=invoice.id)
    return InvoiceIssued(
        invoice_id=invoice.id,
        number=invoice.number,
        owner_id=invoice.owner_id,
        currency=invoice.currency,
        total=invoice.total,
        resource=as_shown(InvoiceSerializer, shown),
    )


def low_balance_reached(wallet: Wallet) -> LowBalanceReached:
    """``wallet`` as its writer left it (balance, reserved and threshold as they are now,
    under its lock)."""
    return LowBalanceReached(
        wallet_id=wallet.id,
        owner_id=wallet.owner_id,
        currency=wallet.currency,
        available=wallet.available,
        threshold=wallet.low_balance_threshold,
        resource=as_shown(WalletSerializer, wallet),
    )


def auto_top_up_due(wallet: Wallet) -> AutoTopUpDue:
    """``wallet`` as its writer left it, below its auto top-up threshold (Billing's own
    event: its handler marks the automatic top-up due; no customer is told of it)."""
    return AutoTopUpDue(wallet_id=wallet.id, available=wallet.available, threshold=wallet.auto_top_up_below)


def balance_alerts(wallet: Wallet, *, available_before: int) -> tuple[LowBalanceReached | AutoTopUpDue, ...]:
    """The events to publish with the write that took ``wallet``'s available balance from
    ``available_before`` to what it is now, under its lock: LowBalanceReached when it
    crossed the owner's low-balance threshold, AutoTopUpDue when it crossed the auto
    top-up threshold; none when it crossed neither. Published with the write's own events
    (one outbox statement), so the purchase path pays nothing for them."""
    alerts: tuple[LowBalanceReached | AutoTopUpDue, ...] = ()
    if wallet.low_balance_crossed(available_before=available_before):
        alerts += (low_balance_reached(wallet),)
    if wallet.auto_top_up_crossed(available_before=available_before):
        alerts += (auto_top_up_due(wallet),)
    return alerts
