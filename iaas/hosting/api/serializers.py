"""Hosting's API shapes (API.md, Hosting)."""

from __future__ import annotations

from rest_framework import serializers

from iaas.api.fields import DomainNameField, StrictChoiceField, StrictUUIDField

from .. import selectors
from ..models import HostingPlan, Subscription


class HostingPlanSerializer(serializers.ModelSerializer):
    class Meta:
        model = HostingPlan
        fields = ["id", "name", "storage_gb", "price_per_month", "currency"]
        read_only_fields = fields


class SubscriptionSerializer(serializers.ModelSerializer):
    plan = serializers.CharField(source="plan_id", read_only=True, help_text="The plan's id.")
    wallet = serializers.UUIDField(source="wallet_id", read_only=True, help_text="The wallet that pays.")

    class Meta:
        model = Subscription
        fields = ["id", "domain", "plan", "wallet", "status", "created_at", "current_period_end"]
        read_only_fields = fields


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
