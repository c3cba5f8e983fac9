"""Card payments against a Stripe double on loopback (tests/payments/stripe_double.py):
the real ``stripe`` client talks to it, and the tests sign its events with Stripe's
documented scheme and post them to our webhook, in order, out of order, or twice."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.payments.stripe_double import StripeDouble, event_body, sign_payload

WEBHOOK_SECRET = "whsec_test_double_0123456789abcdef"
WEBHOOK_PATH = "/payments/stripe/webhook/"


@pytest.fixture
def stripe_double(settings):
    """The double, started, and the app configured to pay through it (no client retries
    unless a test asks: a retry waits)."""
    with StripeDouble() as double:
        settings.IAAS_PAYMENT_PROVIDER = "stripe"
        settings.IAAS_STRIPE_API_BASE = double.url
        settings.IAAS_STRIPE_SECRET_KEY = "sk_test_double"
        settings.IAAS_STRIPE_PUBLISHABLE_KEY = "pk_test_double"
        settings.IAAS_STRIPE_WEBHOOK_SECRETS = [WEBHOOK_SECRET]
        settings.IAAS_STRIPE_NETWORK_RETRIES = 0
        yield double


def post_event(
    event: dict, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None, body: bytes | None = None
):
    """Post a Stripe event to our webhook, signed as Stripe signs it."""
    payload = event_body(event) if body is None else body
    return Client().post(
        WEBHOOK_PATH,
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_payload(event_body(event), secret, timestamp),
    )


@pytest.fixture
def webhook():
    """Deliver events: ``webhook(event)`` asserts a 200 and returns the recorded outcome."""

    def deliver(*events: dict) -> list[str]:
        outcomes = []
        for event in events:
            response = post_event(event)
            assert response.status_code == 200, response.content
            outcomes.append(response.json()["outcome"])
        return outcomes

    return deliver
