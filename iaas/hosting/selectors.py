"""Hosting's reads for the customer API."""

from __future__ import annotations

from django.db.models import QuerySet

from .models import HostingPlan, Subscription


def plan_list() -> QuerySet[HostingPlan]:
    """The plans offered for new subscriptions, cheapest first."""
    return HostingPlan.objects.filter(is_active=True).order_by("price_per_month", "id")


def subscription_list(*, owner_id: int) -> QuerySet[Subscription]:
    return Subscription.objects.filter(owner_id=owner_id).order_by("-created_at", "id")
