"""Card payments through Stripe: PaymentIntents for top-ups, SetupIntents for saved
cards, off-session PaymentIntents for automatic top-ups.

Every call goes out with an idempotency key derived from our object's id (the top-up,
the payment method, the customer), so a call retried after a crash or a lost answer,
from whichever host, makes one payment; Stripe keeps a key 24 hours, and a top-up that
already knows its PaymentIntent reads it back instead of creating one. Calls are made
outside any database transaction (checked here), with short timeouts, no proxy from the
environment and no redirects. The webhook's events are applied by ``stripe_events``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import requests
import stripe
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from iaas.contracts.errors import PaymentProviderUnavailable

from . import PaymentOutcome, SetupOutcome, idempotency_key

if TYPE_CHECKING:
    from ..models import PaymentMethod, TopUp

logger = logging.getLogger(__name__)

NAME = "stripe"
# What a PaymentIntent's status says of the money (the others wait for the customer).
SUCCEEDED = "succeeded"
REFUSED_CODES_BY_STATUS = {"requires_action": "authentication_required"}


def client() -> stripe.StripeClient:
    """A client for the configured account. Its HTTP session reads no proxy from the
    environment and follows no redirect; the API version is the library's own, which the
    webhook endpoint is set up with too (README)."""
    session = requests.Session()
    session.trust_env = False
    session.max_redirects = 0
    return stripe.StripeClient(
        settings.IAAS_STRIPE_SECRET_KEY,
        base_addresses={"api": settings.IAAS_STRIPE_API_BASE},
        max_network_retries=settings.IAAS_STRIPE_NETWORK_RETRIES,
        http_client=stripe.RequestsClient(
            timeout=(settings.IAAS_STRIPE_CONNECT_TIMEOUT, settings.IAAS_STRIPE_READ_TIMEOUT), session=session
        ),
    )


def _outside_transactions() -> None:
    if connection.in_atomic_block:
        raise RuntimeError(
            "Stripe is called outside any database transaction (ARCHITECTURE.md, Money coming in)."
        )


def _call(operation, *args, passes: tuple[type[Exception], ...] = (), **kwargs) -> dict[str, Any]:
    """One Stripe call, its answer as plain data. A card refusal (stripe.CardError), and the
    errors in ``passes``, are the caller's to read; the provider being unreachable,
    failing or refusing the request is PaymentProviderUnavailable (503: retry)."""
    _outside_transactions()
    try:
        return _plain(operation(*args, **kwargs))
    except (stripe.CardError, *passes):
        raise
    except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as error:
        raise PaymentProviderUnavailable() from error
    except stripe.StripeError as error:
        # Stripe refused the request itself (our keys, our parameters): nothing was charged,
        # and an operator must look; the caller sees the provider as unavailable (503).
        logger.error("Stripe refused a request: %s (%s)", error.user_message or error, error.code)
        raise PaymentProviderUnavailable() from error


def _plain(found: Any) -> Any:
    """A Stripe object as the plain dicts and lists it is made of."""
    return found.to_dict() if isinstance(found, stripe.StripeObject) else found


def _top_up_params(top_up: TopUp) -> dict[str, Any]:
    return {
        "amount": top_up.amount,
        "currency": top_up.currency.lower(),
        "description": f"Wallet top-up {top_up.id}",
        "metadata": {
            "top_up_id": str(top_up.id),
            "wallet_id": str(top_up.wallet_id),
            "origin": top_up.origin,
        },
    }


def outcome_of(intent: Any) -> PaymentOutcome:
    """What a PaymentIntent says of the money."""
    status = intent["status"]
    error = intent.get("last_payment_error") or {}
    refused_code = REFUSED_CODES_BY_STATUS.get(status, "")
    return PaymentOutcome(
        succeeded=status == SUCCEEDED,
        provider_reference=intent["id"],
        client_secret=intent.get("client_secret"),
        refused=bool(refused_code),
        failure_code=refused_code or (error.get("code") or ""),
        failure_message=(error.get("message") or "")[:255],
    )


# The smallest charge Stripe takes, per currency, in minor units (Stripe's "Minimum and
# maximum charge amounts"); other currencies: the common 50.
MINIMUM_AMOUNTS = {"EUR": 50, "USD": 50, "GBP": 30, "CHF": 50, "CAD": 50, "AUD": 50, "JPY": 50}


class StripePaymentProvider:
    name = NAME

    def minimum_amount(self, currency: str) -> int:
        return MINIMUM_AMOUNTS.get(currency, 50)

    def start(self, top_up: TopUp) -> PaymentOutcome:
        """The top-up's PaymentIntent, created once (the key is the top-up's); the customer's
        browser confirms it with the answer's client_secret (Stripe.js, Payment Element)."""
        if top_up.provider_reference:
            intent = _call(client().v1.payment_intents.retrieve, top_up.provider_reference)
        else:
            intent = _call(
                client().v1.payment_intents.create,
                params={**_top_up_params(top_up), "automatic_payment_methods": {"enabled": True}},
                options={"idempotency_key": idempotency_key("top-up", top_up.id)},
            )
        return outcome_of(intent)

    def charge_saved(self, top_up: TopUp, method: PaymentMethod) -> PaymentOutcome:
        """Charge a saved card off-session, confirmed at once. A refusal (declined,
        authentication required) is an outcome, not an error: the intent stays at Stripe
        until we cancel it."""
        if top_up.provider_reference:
            return outcome_of(_call(client().v1.payment_intents.retrieve, top_up.provider_reference))
        try:
            intent = _call(
                client().v1.payment_intents.create,
                params={
                    **_top_up_params(top_up),
                    "customer": customer_reference(method.owner_id),
                    "payment_method": method.provider_method_id,
                    "payment_method_types": ["card"],
                    "off_session": True,
                    "confirm": True,
                },
                options={"idempotency_key": idempotency_key("top-up", top_up.id)},
            )
        except stripe.CardError as refusal:
            intent = _plain(refusal.error.payment_intent if refusal.error else None) or {}
            return PaymentOutcome(
                succeeded=False,
                provider_reference=intent.get("id", "") if intent else "",
                refused=True,
                failure_code=refusal.code or "card_declined",
                failure_message=(refusal.user_message or str(refusal))[:255],
            )
        return outcome_of(intent)

    def cancel(self, provider_reference: str) -> None:
        """Cancel a PaymentIntent that will not be paid (an automatic top-up refused); one
        already cancelled or succeeded is left as it is."""
        try:
            _call(
                client().v1.payment_intents.cancel, provider_reference, passes=(stripe.InvalidRequestError,)
            )
        except stripe.InvalidRequestError:
            return None

    def setup_start(self, method: PaymentMethod) -> SetupOutcome:
        """A SetupIntent for a card to charge later off-session; the customer's browser
        completes it with the client_secret, and its webhook saves the card."""
        intent = _call(
            client().v1.setup_intents.create,
            params={
                "customer": customer_reference(method.owner_id),
                "usage": "off_session",
                "payment_method_types": ["card"],
                "metadata": {"payment_method_id": str(method.id)},
            },
            options={"idempotency_key": idempotency_key("payment-method", method.id)},
        )
        return SetupOutcome(setup_reference=intent["id"], client_secret=intent.get("client_secret"))

    def method_card(self, method_reference: str) -> SetupOutcome:
        """A saved card's details (brand, last four digits, expiry), as Stripe tells them."""
        found = _call(client().v1.payment_methods.retrieve, method_reference)
        card = found.get("card") or {}
        return SetupOutcome(
            setup_reference="",
            method_reference=found["id"],
            brand=card.get("brand", "") or "",
            last4=card.get("last4", "") or "",
            exp_month=card.get("exp_month"),
            exp_year=card.get("exp_year"),
        )

    def method_remove(self, method: PaymentMethod) -> None:
        if not method.provider_method_id:
            return None
        try:
            _call(
                client().v1.payment_methods.detach,
                method.provider_method_id,
                passes=(stripe.InvalidRequestError,),
            )
        except stripe.InvalidRequestError:
            return None  # already detached, or gone
        return None


def customer_reference(owner_id: int) -> str:
    """The owner's Stripe customer (cus_...), created on first need. Its key is the
    owner's id: two first uses at once make one customer (within Stripe's 24 hours)."""
    from ..models import PaymentCustomer

    known = (
        PaymentCustomer.objects.filter(owner_id=owner_id, provider=NAME)
        .values_list("provider_customer_id", flat=True)
        .first()
    )
    if known:
        return known
    customer = _call(
        client().v1.customers.create,
        params={"metadata": {"owner_id": str(owner_id)}},
        options={"idempotency_key": f"iaas-customer-{owner_id}"},
    )
    try:
        with transaction.atomic():
            PaymentCustomer.objects.create(
                owner_id=owner_id, provider=NAME, provider_customer_id=customer["id"]
            )
    except IntegrityError:
        pass  # recorded by a concurrent first use: the same customer (the same key)
    return PaymentCustomer.objects.get(owner_id=owner_id, provider=NAME).provider_customer_id
