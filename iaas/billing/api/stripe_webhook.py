"""``POST /payments/stripe/webhook/``: Stripe's signed events (README, "Card payments with
Stripe"). Not under /api/ and not a customer endpoint: no token, no schema entry; the
``Stripe-Signature`` header is the authentication. A bad or stale signature is a 400
``invalid_signature`` and changes nothing; an event is applied once
(``payments.stripe_events``) and answered 200, a repeat too, so Stripe stops resending.
Anything else (the database down) is a 5xx, and Stripe retries for three days."""

from __future__ import annotations

import logging

import stripe
from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from iaas.api.problems import problem_response

from ..payments import stripe_events

logger = logging.getLogger(__name__)


def verified_event(payload: bytes, signature: str) -> dict | None:
    """The event, when ``signature`` is Stripe's for ``payload`` under one of the endpoint
    secrets and its timestamp within the tolerance (Stripe's own check); else None."""
    for secret in settings.IAAS_STRIPE_WEBHOOK_SECRETS:
        try:
            event = stripe.Webhook.construct_event(
                payload, signature, secret, tolerance=settings.IAAS_STRIPE_WEBHOOK_TOLERANCE
            )
        except stripe.SignatureVerificationError:
            continue
        return event.to_dict()
    return None


@extend_schema(exclude=True)
class StripeWebhookView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    def post(self, request):
        payload = request.body
        event = verified_event(payload, request.headers.get("Stripe-Signature", ""))
        if event is None:
            logger.warning("stripe webhook: signature refused")
            return problem_response(
                status.HTTP_400_BAD_REQUEST,
                "invalid_signature",
                "The Stripe-Signature header does not match this body under the endpoint's secret, "
                "or its timestamp is too old. Nothing was done.",
            )
        outcome = stripe_events.event_apply(event)
        logger.info("stripe webhook: %s %s: %s", event.get("type"), event.get("id"), outcome)
        return Response({"received": True, "outcome": outcome})
