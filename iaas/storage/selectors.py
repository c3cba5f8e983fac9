"""Storage's reads for the customer API (its volumes' are the kit's: MeteredServices.owned)."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import VolumePlan


def plan_list() -> QuerySet[VolumePlan]:
    """The plans offered for new volumes, cheapest first."""
    return VolumePlan.objects.filter(is_active=True).order_by("price_per_gb_month", "id")
