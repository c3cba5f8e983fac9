"""Billing's API shapes (API.md, Billing)."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from iaas.api.fields import StrictChoiceField, StrictIntegerField

from ..models import LedgerEntry, Refund, TopUp, Wallet

LOW_BALANCE_HELP = (
    "Minor units, or null (the default): no alert. When the available balance drops from at "
    "or above it to below it, the customer is told once (the `wallet.low_balance` webhook "
    "event, and email); told again only after it has been back at or above it."
)


class WalletSerializer(serializers.ModelSerializer):
    available = serializers.IntegerField(
        read_only=True, help_text="balance - reserved: what the customer can still spend (minor units)."
    )
    low_balance_threshold = serializers.IntegerField(
        read_only=True, allow_null=True, help_text=LOW_BALANCE_HELP
    )

    class Meta:
        model = Wallet
        fields = [
            "id",
            "currency",
            "status",
            "balance",
            "reserved",
            "available",
            "low_balance_threshold",
            "debt",
            "created_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "balance": {"help_text": "The settled balance, the sum of the ledger (minor units)."},
            "reserved": {"help_text": "Held for purchases not yet settled and for allowances (minor units)."},
            "debt": {
                "help_text": "Minor units owed after the payment provider took money back (a card refund "
                "or dispute) that the available balance could not cover; 0 normally. Top-ups pay it first."
            },
        }


class WalletUpdateSerializer(serializers.Serializer):
    """A wallet's writable field: its low-balance threshold (other fields sent are
    ignored: they are Billing's to change)."""

    def get_fields(self):
        fields = super().get_fields()
        # The limit is a setting: read it per request (and for the schema).
        fields["low_balance_threshold"] = StrictIntegerField(
            required=False,
            allow_null=True,
            min_value=0,
            max_value=settings.IAAS_MAX_TOP_UP,
            help_text=f"{LOW_BALANCE_HELP} A JSON integer from 0 to the top-up limit, or null to turn "
            "it off. Setting a threshold above what is available now tells the customer at once.",
        )
        return fields


class WalletCreateSerializer(serializers.Serializer):
    currency = StrictChoiceField(choices=[], help_text="An upper-case ISO 4217 code the provider supports.")

    def get_fields(self):
        fields = super().get_fields()
        fields["currency"].choices = settings.IAAS_SUPPORTED_CURRENCIES
        return fields


class LedgerEntrySerializer(serializers.ModelSerializer):
    charges = serializers.PrimaryKeyRelatedField(
        many=True,
        read_only=True,
        pk_field=serializers.UUIDField(),
        help_text=(
            "For a `charge` entry, the ids of the charges it settles (one entry settles a "
            "context's charges of one settlement at once); empty for other kinds."
        ),
    )

    class Meta:
        model = LedgerEntry
        fields = [
            "id",
            "sequence",
            "kind",
            "amount",
            "balance_after",
            "transaction_date",
            "posted_at",
            "description",
            "charges",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "sequence": {"help_text": "Per-wallet posting order; lists are newest (highest) first."},
            "balance_after": {"help_text": "The wallet's balance right after this entry."},
            "transaction_date": {"help_text": "When the business event happened."},
            "posted_at": {"help_text": "When Billing booked it."},
        }


class TopUpCreateSerializer(serializers.Serializer):
    amount = StrictIntegerField(min_value=1)

    def get_fields(self):
        fields = super().get_fields()
        # The limit is a setting: read it per request (and for the schema).
        fields["amount"] = StrictIntegerField(
            min_value=1,
            max_value=settings.IAAS_MAX_TOP_UP,
            help_text="Minor units, a JSON integer.",
        )
        return fields


class TopUpSerializer(serializers.ModelSerializer):
    """A top-up as GET reads it and the top-up webhooks (WalletToppedUp, TopUpFailed)
    carry it; the POST's answer adds what the customer's browser needs to pay."""

    wallet = serializers.UUIDField(source="wallet_id", read_only=True, help_text="The wallet credited.")
    payment_method = serializers.UUIDField(
        source="payment_method_id",
        read_only=True,
        allow_null=True,
        help_text="The saved payment method an automatic top-up charged; null otherwise.",
    )

    class Meta:
        model = TopUp
        fields = [
            "id",
            "amount",
            "currency",
            "status",
            "wallet",
            "provider",
            "provider_reference",
            "origin",
            "payment_method",
            "failed_attempts",
            "failure_code",
            "failure_message",
            "debt_paid",
            "created_at",
            "completed_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "amount": {"help_text": "Minor units."},
            "status": {
                "help_text": "`pending` until the payment provider says the money arrived "
                "(`succeeded`: the wallet is credited) or will not (`failed`: cancelled or expired). "
                "A refused attempt (a declined card) leaves it `pending`: the customer may try again."
            },
            "provider": {
                "help_text": "The payment provider that takes the payment: `sandbox`, `manual` or `stripe`."
            },
            "provider_reference": {
                "help_text": "The provider's id for the payment (Stripe: the PaymentIntent, `pi_...`); "
                "empty until the provider has answered."
            },
            "origin": {"help_text": "`customer` (a POST) or `auto` (an automatic top-up)."},
            "failed_attempts": {"help_text": "Payment attempts the provider refused (a declined card)."},
            "failure_code": {
                "help_text": "The provider's code for the last refused attempt, e.g. `card_declined`, "
                "`authentication_required`; empty when none was refused."
            },
            "failure_message": {"help_text": "The provider's words for the last refused attempt."},
            "debt_paid": {
                "help_text": "Minor units of this top-up that paid the wallet's debt (money a card "
                "refund or dispute took back that the wallet could not cover); 0 normally."
            },
            "completed_at": {"help_text": "When it succeeded or failed; null while pending."},
        }


class TopUpStartedSerializer(TopUpSerializer):
    """The POST's answer: the top-up, and how the customer's browser pays a pending one."""

    client_secret = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="With a card provider, while the top-up is pending: the secret the customer's "
        "browser confirms the payment with (Stripe.js `confirmPayment`). Null otherwise. Never log it.",
    )
    publishable_key = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="With a card provider: the provider's publishable key for the browser. Null otherwise.",
    )

    class Meta(TopUpSerializer.Meta):
        fields = [*TopUpSerializer.Meta.fields, "client_secret", "publishable_key"]
        read_only_fields = fields


class RefundSerializer(serializers.ModelSerializer):
    """A refund of one settled charge (no endpoint yet: what a ChargeRefunded webhook shows)."""

    wallet = serializers.UUIDField(source="wallet_id", read_only=True)
    charge = serializers.UUIDField(source="charge_id", read_only=True, help_text="The charge refunded.")
    context = serializers.CharField(
        source="charge.context", read_only=True, help_text="The service that charged it."
    )
    currency = serializers.CharField(source="wallet.currency", read_only=True)

    class Meta:
        model = Refund
        fields = ["id", "wallet", "charge", "context", "amount", "currency", "reason", "created_at"]
        read_only_fields = fields
        extra_kwargs = {"amount": {"help_text": "Minor units given back (at most the charge's)."}}


class InvoiceLineSerializer(serializers.Serializer):
    description = serializers.CharField()
    amount = serializers.IntegerField(help_text="Minor units: the sum of the line's charges.")
    transaction_date = serializers.DateTimeField(help_text="The latest of its charges' dates.")
    context = serializers.CharField(help_text="The service that charged it: `cloud` or `hosting`.")
    subject_id = serializers.UUIDField(
        allow_null=True,
        help_text="The server, subscription or volume of the line (one line per service and month); "
        "null for a charge of no service, which has a line of its own.",
    )
    period_start = serializers.DateTimeField(allow_null=True, help_text="The start of its charges' periods.")
    period_end = serializers.DateTimeField(allow_null=True, help_text="The end of its charges' periods.")
    charges = serializers.PrimaryKeyRelatedField(
        many=True,
        read_only=True,
        pk_field=serializers.UUIDField(),
        help_text="The ids of the line's charges.",
    )


class InvoiceSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    number = serializers.CharField(help_text="Gapless within its yearly series, e.g. `INV-2026-000001`.")
    issued_at = serializers.DateTimeField()
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    currency = serializers.CharField()
    total = serializers.IntegerField(help_text="Minor units.")
    lines = InvoiceLineSerializer(many=True)
