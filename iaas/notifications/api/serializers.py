"""The webhook endpoints and deliveries as the API shows them."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from iaas.api.fields import StrictCharField

from .. import catalog
from ..models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean only: ``"true"``, ``1`` or ``null`` is invalid."""

    default_error_messages = {"invalid": "A JSON boolean (true or false) is required."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class EventTypesField(serializers.ListField):
    child = serializers.ChoiceField(choices=catalog.NAMES)

    def __init__(self, **kwargs):
        super().__init__(
            min_length=1,
            max_length=len(catalog.NAMES),
            help_text="The event types to receive (docs/webhooks.md): " + ", ".join(catalog.NAMES) + ".",
            **kwargs,
        )

    def to_internal_value(self, data):
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            self.fail("not_a_list", input_type=type(data).__name__)
        return sorted(set(super().to_internal_value(data)))


class WebhookEndpointSerializer(serializers.ModelSerializer):
    event_types = serializers.ListField(child=serializers.CharField(), read_only=True)
    enabled = serializers.BooleanField(
        read_only=True,
        help_text="Whether events are sent. An endpoint failing for five days is disabled "
        "(`disabled_reason` says why) until you enable it again.",
    )
    failing_since = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="The first failed attempt since the last success."
    )
    disabled_at = serializers.DateTimeField(read_only=True, allow_null=True)
    previous_secret_expires_at = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="After a rotation, until when the previous secret also signs.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "event_types",
            "enabled",
            "created_at",
            "updated_at",
            "failing_since",
            "disabled_at",
            "disabled_reason",
            "previous_secret_expires_at",
        ]
        read_only_fields = fields


class WebhookEndpointWithSecretSerializer(WebhookEndpointSerializer):
    secret = serializers.SerializerMethodField(
        help_text="The signing secret (`whsec_...`), shown this once and never again: it is "
        "stored encrypted. Verify each delivery's `webhook-signature` with it (README)."
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.STR)
    def get_secret(self, endpoint) -> str:
        return self.context["secret"]


class WebhookEndpointWriteSerializer(serializers.Serializer):
    url = StrictCharField(
        max_length=2000,
        help_text="Where events are POSTed: https (http only outside production), a host that "
        "resolves to public addresses only.",
    )
    event_types = EventTypesField()
    enabled = StrictBooleanField(required=False, default=True)
    description = StrictCharField(required=False, allow_blank=True, max_length=200, default="")


class WebhookEndpointPatchSerializer(WebhookEndpointWriteSerializer):
    url = StrictCharField(max_length=2000, required=False)
    event_types = EventTypesField(required=False)
    enabled = StrictBooleanField(required=False)
    description = StrictCharField(required=False, allow_blank=True, max_length=200)


class WebhookAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ["number", "attempted_at", "status_code", "duration_ms", "error", "next_attempt_at"]
        read_only_fields = fields


class WebhookDeliverySerializer(serializers.ModelSerializer):
    webhook_id = serializers.UUIDField(
        source="message_id", read_only=True, help_text="The `webhook-id` header and the body's `id`."
    )
    endpoint = serializers.UUIDField(source="endpoint_id", read_only=True)
    occurred_at = serializers.DateTimeField(source="message.occurred_at", read_only=True)
    recent_attempts = serializers.SerializerMethodField(
        help_text="The latest attempts, newest first (at most 5)."
    )

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "webhook_id",
            "endpoint",
            "event_type",
            "occurred_at",
            "status",
            "attempts",
            "last_attempt_at",
            "last_status_code",
            "last_error",
            "next_attempt_at",
            "succeeded_at",
            "redeliveries",
            "created_at",
            "recent_attempts",
        ]
        read_only_fields = fields

    @extend_schema_field(WebhookAttemptSerializer(many=True))
    def get_recent_attempts(self, delivery) -> list:
        attempts = getattr(delivery, "recent", None)
        if attempts is None:
            attempts = list(delivery.attempt_set.all()[:5])
        return WebhookAttemptSerializer(attempts[:5], many=True).data
