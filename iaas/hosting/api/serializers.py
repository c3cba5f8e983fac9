"""Hosting's API shapes (API.md, Hosting)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from iaas.api.fields import DomainNameField, StrictChoiceField, StrictUUIDField
from iaas.spending.models import SuspensionCause

from .. import selectors, services
from ..models import HostingPlan, Subscription


class HostingPlanSerializer(serializers.ModelSerializer):
    class Meta:
        model = HostingPlan
        fields = ["id", "name", "storage_gb", "price_per_month", "currency"]
        read_only_fields = fields


class SubscriptionSerializer(serializers.ModelSerializer):
    plan = serializers.CharField(source="plan_id", read_only=True, help_text="The plan's id.")
    wallet = serializers.UUIDField(source="wallet_id", read_only=True, help_text="The wallet that pays.")
    suspension_causes = serializers.ListField(
        child=serializers.ChoiceField(choices=SuspensionCause.choices),
        read_only=True,
        help_text="Why it is suspended (empty when it is not): unpaid (the wallet could not pay), "
        "wallet_blocked (the wallet is frozen or closed), operator (held by the provider). "
        "It runs again only when none holds.",
    )
    cancels_at = serializers.SerializerMethodField(
        help_text="When it will be cancelled for non-payment unless the wallet pays: set only while "
        "it is suspended for unpaid alone; null when no clock runs.",
    )

    class Meta:
        model = Subscription
        fields = [
            "id",
            "domain",
            "plan",
            "wallet",
            "status",
            "created_at",
            "current_period_end",
            "suspension_causes",
            "cancels_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_cancels_at(self, obj):
        return services.subscription_cancels_at(obj)


class SubscriptionCreateSerializer(serializers.Serializer):
    domain = DomainNameField(
        help_text="A fully qualified domain name (two labels or more); stored in lower case."
    )
    plan = StrictChoiceField(choices=[], help_text="The id of an offered plan (GET /api/v1/hosting/plans/).")
    wallet = StrictUUIDField(help_text="One of your wallets, in the plan's currency.")

    def get_fields(self):
        fields = super().get_fields()
        # The catalog is data: the offered plans when the request (or the schema) is made.
        fields["plan"].choices = list(selectors.plan_list().values_list("id", flat=True))
        return fields
