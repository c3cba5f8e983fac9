"""Cloud's API shapes (API.md, Cloud)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from iaas.api.fields import HostnameLabelField, StrictChoiceField, StrictUUIDField
from iaas.spending.models import SuspensionCause

from .. import selectors, services
from ..models import Server, ServerPlan


class ServerPlanSerializer(serializers.ModelSerializer):
    class Meta:
        model = ServerPlan
        fields = ["id", "name", "vcpus", "memory_mb", "disk_gb", "price_per_hour", "currency"]
        read_only_fields = fields


class UsageThisMonthSerializer(serializers.Serializer):
    hours = serializers.IntegerField(
        min_value=0,
        help_text="Hours of the current calendar month paid for so far (a started hour is a whole one).",
    )
    amount = serializers.IntegerField(
        min_value=0,
        help_text="What those hours cost, in minor units of the wallet's currency, at most the plan's "
        "monthly cap (refunded money does not count towards it). Spent as the hours accrue; on the "
        "wallet's ledger once settled.",
    )


class ServerSerializer(serializers.ModelSerializer):
    plan = serializers.CharField(source="plan_id", read_only=True, help_text="The plan's id.")
    wallet = serializers.UUIDField(source="wallet_id", read_only=True, help_text="The wallet that pays.")
    suspension_causes = serializers.ListField(
        child=serializers.ChoiceField(choices=SuspensionCause.choices),
        read_only=True,
        help_text="Why it is suspended (empty when it is not): unpaid (the wallet could not pay), "
        "wallet_blocked (the wallet is frozen or closed), operator (held by the provider). "
        "It runs again only when none holds.",
    )
    terminates_at = serializers.SerializerMethodField(
        help_text="When it will be terminated for non-payment unless the wallet pays: set only while "
        "it is suspended for unpaid alone; null when no clock runs.",
    )
    usage_this_month = serializers.SerializerMethodField(
        help_text="Its usage in the current calendar month so far (months run in the provider's time "
        "zone, UTC by default); zeros when it has none yet.",
    )

    class Meta:
        model = Server
        fields = [
            "id",
            "name",
            "plan",
            "wallet",
            "status",
            "created_at",
            "paid_until",
            "suspension_causes",
            "terminates_at",
            "usage_this_month",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_terminates_at(self, obj):
        return services.server_terminates_at(obj)

    @extend_schema_field(UsageThisMonthSerializer)
    def get_usage_this_month(self, obj) -> dict:
        # A list or a detail reads it with the servers (selectors.server_list); a server
        # just bought or terminated is read once more.
        if hasattr(obj, "usage_hours"):
            hours, amount = obj.usage_hours, obj.usage_amount
        else:
            hours, amount = selectors.server_usage_this_month(server_id=obj.id)
        return {"hours": hours, "amount": amount}


class ServerCreateSerializer(serializers.Serializer):
    name = HostnameLabelField(help_text="A hostname label: 1 to 63 letters, digits and hyphens.")
    plan = StrictChoiceField(choices=[], help_text="The id of an offered plan (GET /api/v1/cloud/plans/).")
    wallet = StrictUUIDField(help_text="One of your wallets, in the plan's currency.")

    def get_fields(self):
        fields = super().get_fields()
        # The catalog is data: the offered plans when the request (or the schema) is made.
        fields["plan"].choices = list(selectors.plan_list().values_list("id", flat=True))
        return fields
