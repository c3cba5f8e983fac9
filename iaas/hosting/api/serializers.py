"""Hosting's API shapes (API.md, Hosting)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from iaas.api.fields import DomainNameField
from iaas.spending.api import PurchaseSerializer, SoldServiceSerializer

from .. import selectors, services
from ..models import HostingPlan, Subscription


class HostingPlanSerializer(serializers.ModelSerializer):
    class Meta:
        model = HostingPlan
        fields = ["id", "name", "storage_gb", "price_per_month", "currency"]
        read_only_fields = fields


class SubscriptionSerializer(SoldServiceSerializer):
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


class SubscriptionCreateSerializer(PurchaseSerializer):
    plans = selectors.plan_list
    plans_path = "/api/v1/hosting/plans/"
    domain = DomainNameField(
        help_text="A fully qualified domain name (two labels or more); stored in lower case."
    )
