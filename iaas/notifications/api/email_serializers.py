"""The customer's email settings as the API shows and takes them."""

from __future__ import annotations

from rest_framework import serializers

from iaas.api.fields import StrictCharField


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean only: ``"true"``, ``1`` or null are invalid, never guessed at."""

    default_error_messages = {"invalid": "A JSON boolean is required (true or false)."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class EmailSettingsSerializer(serializers.Serializer):
    address = serializers.EmailField(help_text="Where we write to you (given at registration).")
    verified = serializers.SerializerMethodField(
        help_text="Whether the address is verified: until it is, only the verification link is sent to it."
    )
    verified_at = serializers.DateTimeField(allow_null=True)
    verification_sent_at = serializers.DateTimeField(
        allow_null=True, help_text="When the last verification link was sent."
    )
    low_balance = serializers.BooleanField(
        help_text="A warning when a wallet's available balance goes below its `low_balance_threshold`."
    )
    services = serializers.BooleanField(
        help_text="A service suspended (why, and when it will end), a warning a day before it ends, "
        "its end, and its resumption."
    )
    payments = serializers.BooleanField(help_text="Top-ups that succeeded or failed, and refunds.")
    invoices = serializers.BooleanField(help_text="Each invoice as it is issued.")

    def get_verified(self, obj) -> bool:
        return obj.verified_at is not None


class EmailSettingsUpdateSerializer(serializers.Serializer):
    """Every field, as PUT replaces them all. A new address is unverified until its link
    is opened; the link is sent at once."""

    address = StrictCharField(max_length=254, help_text="A new address gets a verification link.")
    low_balance = StrictBooleanField()
    services = StrictBooleanField()
    payments = StrictBooleanField()
    invoices = StrictBooleanField()

    def validate_address(self, value: str) -> str:
        return serializers.EmailField().run_validation(value)
