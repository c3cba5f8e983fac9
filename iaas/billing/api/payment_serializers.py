"""The API's shapes of saved payment methods and automatic top-ups (API.md, "Additions to
version 1"). Money in minor units, as JSON integers only (StrictIntegerField)."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from iaas.api.fields import StrictIntegerField, StrictUUIDField

from ..models import AutoTopUp, PaymentMethod


class PaymentMethodSerializer(serializers.ModelSerializer):
    """A saved payment method as GET reads it."""

    class Meta:
        model = PaymentMethod
        fields = [
            "id",
            "status",
            "provider",
            "brand",
            "last4",
            "exp_month",
            "exp_year",
            "failure_message",
            "created_at",
            "activated_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "status": {
                "help_text": "`pending` until the customer completes the card's setup in their browser "
                "(with the POST's `client_secret`), `active` once the provider saved the card (it may "
                "then be chosen for automatic top-ups), `failed` when the setup was cancelled, "
                "`removed` once deleted (listed only with `?status=removed`)."
            },
            "provider": {"help_text": "The payment provider that keeps the card: `sandbox` or `stripe`."},
            "brand": {"help_text": "The card's brand (`visa`, `mastercard`...); empty until known."},
            "last4": {"help_text": "The card number's last four digits; empty until known."},
            "exp_month": {"help_text": "The card's expiry month (1 to 12); null until known."},
            "exp_year": {"help_text": "The card's expiry year; null until known."},
            "failure_message": {
                "help_text": "Why the last attempt to save the card failed, in the provider's words; "
                "empty when none did."
            },
            "activated_at": {"help_text": "When the card became usable; null until then."},
        }


class PaymentMethodStartedSerializer(PaymentMethodSerializer):
    """The POST's answer: the new method, and what the customer's browser needs to
    complete its setup (shown in this answer only, never stored with an Idempotency-Key)."""

    client_secret = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="While the method is pending with a card provider: the secret the customer's "
        "browser completes the setup with (Stripe.js `confirmSetup`). Null otherwise. Never log it.",
    )
    publishable_key = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="With Stripe: the publishable key for Stripe.js. Null otherwise.",
    )

    class Meta(PaymentMethodSerializer.Meta):
        fields = [*PaymentMethodSerializer.Meta.fields, "client_secret", "publishable_key"]
        read_only_fields = fields


class AutoTopUpSerializer(serializers.ModelSerializer):
    """A wallet's automatic top-up: its settings, and how its attempts went."""

    wallet = serializers.UUIDField(source="wallet_id", read_only=True, help_text="The wallet topped up.")
    currency = serializers.CharField(source="wallet.currency", read_only=True, help_text="The wallet's.")
    payment_method = serializers.UUIDField(
        source="payment_method_id", read_only=True, help_text="The saved payment method charged."
    )
    due = serializers.SerializerMethodField(
        help_text="Whether a top-up is wanted now (the available balance went below the threshold) "
        "and not yet done."
    )
    next_attempt_at = serializers.SerializerMethodField(
        help_text="While a top-up is due: when it is tried next (after a refusal it waits, and at "
        "most IAAS_AUTO_TOP_UP_DAILY_ATTEMPTS top-ups start in any 24 hours). Null when none is due."
    )

    class Meta:
        model = AutoTopUp
        fields = [
            "wallet",
            "threshold",
            "amount",
            "currency",
            "payment_method",
            "due",
            "next_attempt_at",
            "last_attempt_at",
            "consecutive_failures",
            "last_failure_code",
            "last_failure_message",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "threshold": {
                "help_text": "Minor units: when the available balance drops below it, the card is charged."
            },
            "amount": {"help_text": "Minor units charged each time."},
            "last_attempt_at": {"help_text": "When a top-up was last started; null before the first."},
            "consecutive_failures": {
                "help_text": "Automatic top-ups refused in a row (declined, authentication required); "
                "0 after a success."
            },
            "last_failure_code": {
                "help_text": "The provider's code for the last refusal (`card_declined`, "
                "`authentication_required`...), or `payment_method_unusable`; empty after a success."
            },
            "last_failure_message": {"help_text": "The provider's words for the last refusal."},
        }

    @extend_schema_field(serializers.BooleanField())
    def get_due(self, auto: AutoTopUp) -> bool:
        return auto.due_at is not None

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_next_attempt_at(self, auto: AutoTopUp) -> str | None:
        if auto.due_at is None or auto.next_attempt_at is None:
            return None
        return serializers.DateTimeField().to_representation(auto.next_attempt_at)


class AutoTopUpWriteSerializer(serializers.Serializer):
    """PUT's body: the whole setting, every field required."""

    payment_method = StrictUUIDField(help_text="One of your saved payment methods, `active`.")

    def get_fields(self):
        fields = super().get_fields()
        # The limit is a setting: read it per request (and for the schema).
        fields["threshold"] = StrictIntegerField(
            min_value=1,
            max_value=settings.IAAS_MAX_TOP_UP,
            help_text="Minor units, a JSON integer: top up when the available balance drops below it. "
            "A wallet below it already is topped up at once.",
        )
        fields["amount"] = StrictIntegerField(
            min_value=1,
            max_value=settings.IAAS_MAX_TOP_UP,
            help_text="Minor units, a JSON integer (at most the top-up limit): charged each time.",
        )
        return fields
