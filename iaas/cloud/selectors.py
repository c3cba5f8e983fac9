"""Cloud's reads for the customer API (its servers' are the kit's: MeteredServices.owned)."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import ServerPlan


def plan_list() -> QuerySet[ServerPlan]:
    """The plans offered for new servers, cheapest first."""
    return ServerPlan.objects.filter(is_active=True).order_by("price_per_hour", "id")
