"""Cloud's API shapes (API.md, Cloud)."""

from __future__ import annotations

from rest_framework import serializers

from iaas.api.fields import HostnameLabelField
from iaas.spending.api import MeteredServiceSerializer, PurchaseSerializer

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


class ServerCreateSerializer(PurchaseSerializer):
    plans = selectors.plan_list
    plans_path = "/api/v1/cloud/plans/"
    name = HostnameLabelField(help_text="A hostname label: 1 to 63 letters, digits and hyphens.")
