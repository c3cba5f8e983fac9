"""Card payments on a wallet, so that every payment page of the operator console has a row
to show: a saved card and an automatic top-up, the customer at Stripe, a card top-up
credited (its PaymentIntent known) and partly refunded by the card provider, the provider's
event for it, and a payment parked for an operator. Made through Billing's services where
one exists (no call reaches Stripe: none of these asks it anything)."""

from __future__ import annotations

from django.test import override_settings
from django.utils import timezone

from iaas.billing import reversals, services
from iaas.billing.models import ParkedPayment, PaymentCustomer, PaymentEvent, PaymentMethod, Wallet
from iaas.billing.payments import auto

# What an operator pastes into the search of the event and parked-payment lists.
SEARCH = "pi_books"


def payment_rows(wallet: Wallet) -> dict:
    owner_id = wallet.owner_id
    with override_settings(IAAS_PAYMENT_PROVIDER="stripe"):
        PaymentCustomer.objects.create(owner_id=owner_id, provider="stripe", provider_customer_id="cus_books")
        method = PaymentMethod.objects.create(
            owner_id=owner_id,
            provider="stripe",
            status=PaymentMethod.Status.ACTIVE,
            setup_reference="seti_books",
            provider_method_id="pm_books",
            brand="visa",
            last4="4242",
            exp_month=12,
            exp_year=2030,
            activated_at=timezone.now(),
        )
        automatic = auto.auto_top_up_set(
            wallet_id=wallet.id, owner_id=owner_id, threshold=100, amount=5_000, payment_method_id=method.id
        )
        top_up = services.top_up_open(wallet_id=wallet.id, owner_id=owner_id, amount=2_000)
        top_up = services.top_up_confirm(top_up_id=top_up.id, provider_reference="pi_books_paid")
    reversal = reversals.reversal_apply(
        top_up_id=top_up.id, kind="refund", reference="ch_books:refunded:500", amount=500
    ).reversal
    event = PaymentEvent.objects.create(
        provider="stripe",
        event_id="evt_books_paid",
        type="payment_intent.succeeded",
        object_id="pi_books_paid",
        outcome="credited",
        occurred_at=timezone.now(),
    )
    parked = ParkedPayment.objects.create(
        provider="stripe",
        payment_reference="pi_books_parked",
        amount=1_500,
        currency=wallet.currency,
        metadata={"top_up_id": "not-ours"},
        why="Its metadata names no top-up we know.",
        event_id="evt_books_parked",
    )
    return {
        "method": method,
        "auto_top_up": automatic,
        "top_up": top_up,
        "reversal": reversal,
        "event": event,
        "parked": parked,
    }
