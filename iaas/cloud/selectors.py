"""Cloud's reads for the customer API."""

from __future__ import annotations

import datetime as dt
import uuid

from django.db.models import OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from iaas.common.periods import Month

from .models import Server, ServerPlan, Usage


def plan_list() -> QuerySet[ServerPlan]:
    """The plans offered for new servers, cheapest first."""
    return ServerPlan.objects.filter(is_active=True).order_by("price_per_hour", "id")


def this_month(now: dt.datetime | None = None) -> dt.date:
    """The first day of the calendar month (the project's time zone) usage is shown for."""
    month = Month.containing(now or timezone.now())
    return dt.date(month.year, month.month, 1)


def server_list(*, owner_id: int, now: dt.datetime | None = None) -> QuerySet[Server]:
    """The customer's servers, newest first, each with its usage of the current month
    (``usage_hours``, ``usage_amount``; 0 without a record): read in the same query as
    the servers (two probes of the usage records' unique (service, month) index per
    row), so a page of servers is one query, not one more per server."""
    record = Usage.objects.filter(service_id=OuterRef("pk"), month=this_month(now))
    return (
        Server.objects.filter(owner_id=owner_id)
        .annotate(
            usage_hours=Coalesce(Subquery(record.values("hours")[:1]), Value(0)),
            usage_amount=Coalesce(Subquery(record.values("amount")[:1]), Value(0)),
        )
        .order_by("-created_at", "id")
    )


def server_usage_this_month(*, server_id: uuid.UUID, now: dt.datetime | None = None) -> tuple[int, int]:
    """(hours, amount) of one server's usage in the current month; (0, 0) without a
    record. For a server read without ``server_list``'s annotations (just bought, just
    terminated)."""
    row = (
        Usage.objects.filter(service_id=server_id, month=this_month(now))
        .values_list("hours", "amount")
        .first()
    )
    return row or (0, 0)
