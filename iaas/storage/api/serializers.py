"""Storage's API shapes (API.md, additions: volumes), with the same field names as servers."""

from __future__ import annotations

from django.db.models import Max, Min
from rest_framework import serializers

from iaas.api.fields import HostnameLabelField, StrictIntegerField
from iaas.spending.api import MeteredServiceSerializer, PurchaseSerializer

from .. import selectors
from ..models import Volume, VolumePlan
from ..services import size_refusal
from ..spending import volumes


class VolumePlanSerializer(serializers.ModelSerializer):
    class Meta:
        model = VolumePlan
        fields = ["id", "name", "price_per_gb_month", "min_size_gb", "max_size_gb", "currency"]
        read_only_fields = fields
        extra_kwargs = {
            "price_per_gb_month": {
                "help_text": "Minor units per GB and month, accrued hourly (a GB-hour is a 730th of it) "
                "and rounded once per month; a month costs at most a full month at the volume's size."
            }
        }


class VolumeSerializer(MeteredServiceSerializer):
    metered = volumes

    class Meta:
        model = Volume
        fields = [
            "id",
            "name",
            "plan",
            "wallet",
            "size_gb",
            "status",
            "created_at",
            "paid_until",
            "suspension_causes",
            "terminates_at",
            "usage_this_month",
        ]
        read_only_fields = fields


SIZE_HELP = "Size in GB, within the plan's min_size_gb and max_size_gb (GET /api/v1/storage/plans/)."


def size_field(help_text: str) -> StrictIntegerField:
    """A size in GB, bounded by the catalog when the request (or the schema) is made: the
    smallest and largest sizes any offered plan sells. Each plan's own range is checked
    against the plan chosen."""
    bounds = selectors.plan_list().aggregate(low=Min("min_size_gb"), high=Max("max_size_gb"))
    return StrictIntegerField(min_value=bounds["low"] or 1, max_value=bounds["high"], help_text=help_text)


class VolumeCreateSerializer(PurchaseSerializer):
    plans = selectors.plan_list
    plans_path = "/api/v1/storage/plans/"
    name = HostnameLabelField(help_text="1 to 63 letters, digits and hyphens.")

    def get_fields(self):
        fields = super().get_fields()
        fields["size_gb"] = size_field(SIZE_HELP)  # bounded by the catalog, as the plans are
        return fields

    def validate(self, attrs):
        plan = selectors.plan_list().filter(pk=attrs["plan"]).first()
        if plan is None:  # retired since the choices were read
            raise serializers.ValidationError({"plan": ["This plan is no longer offered."]})
        if refusal := size_refusal(plan, attrs["size_gb"]):
            raise serializers.ValidationError({"size_gb": [refusal]})
        return attrs


class VolumeResizeSerializer(serializers.Serializer):
    def get_fields(self):
        fields = super().get_fields()
        fields["size_gb"] = size_field(
            f"The new size: at least the current one (a volume only grows). {SIZE_HELP}"
        )
        return fields

    def validate_size_gb(self, size_gb: int) -> int:
        volume = self.context["volume"]
        if size_gb < volume.size_gb:
            raise serializers.ValidationError(f"A volume can only grow: this one is {volume.size_gb} GB.")
        if refusal := size_refusal(volume.plan, size_gb):
            raise serializers.ValidationError(refusal)
        return size_gb
