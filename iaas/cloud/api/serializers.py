"""Cloud's API shapes (API.md, Cloud)."""

from __future__ import annotations

from rest_framework import serializers

from iaas.api.fields import HostnameLabelField, StrictChoiceField, StrictUUIDField
from iaas.spending.api import MeteredServiceSerializer

from .. import selectors
from ..models import Server, ServerPlan
from ..spending import servers


class ServerPlanSerializer(serializers.ModelSerializer):
    class Meta:
        model = ServerPlan
        fields = ["id", "name", "vcpus", "memory_mb", "disk_gb", "price_per_hour", "currency"]
        read_only_fields = fields


class ServerSerializer(MeteredServiceSerializer):
    metered = servers

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


class ServerCreateSerializer(serializers.Serializer):
    name = HostnameLabelField(help_text="A hostname label: 1 to 63 letters, digits and hyphens.")
    plan = StrictChoiceField(choices=[], help_text="The id of an offered plan (GET /api/v1/cloud/plans/).")
    wallet = StrictUUIDField(help_text="One of your wallets, in the plan's currency.")

    def get_fields(self):
        fields = super().get_fields()
        # The catalog is data: the offered plans when the request (or the schema) is made.
        fields["plan"].choices = list(selectors.plan_list().values_list("id", flat=True))
        return fields
