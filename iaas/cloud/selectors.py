"""Cloud's reads for the customer API."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import Server, ServerPlan


def plan_list() -> QuerySet[ServerPlan]:
    """The plans offered for new servers, cheapest first."""
    return ServerPlan.objects.filter(is_active=True).order_by("price_per_hour", "id")


def server_list(*, owner_id: int) -> QuerySet[Server]:
    return Server.objects.filter(owner_id=owner_id).order_by("-created_at", "id")
