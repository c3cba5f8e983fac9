"""Every row lock Cloud takes, in one place, so the lock order can be read here
(ARCHITECTURE.md): the server row, then Cloud's allowance row, then (inside Billing)
the wallet and the hold. A batch takes each class of row in key order, SKIP LOCKED."""

from __future__ import annotations

import datetime as dt
import uuid

from django.db.models import DateField, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import TruncMonth

from iaas.contracts.errors import NotFound
from iaas.spending.batch import Partition, in_partition

from .models import Server, Usage


def server_lock(server_id: uuid.UUID, *, owner_id: int | None = None) -> Server:
    rows = Server.objects.select_for_update(no_key=True)
    if owner_id is not None:
        rows = rows.filter(owner_id=owner_id)
    try:
        return rows.get(pk=server_id)
    except Server.DoesNotExist:
        raise NotFound("No such server.") from None


def server_try_lock(server_id: uuid.UUID) -> Server | None:
    """Lock a server unless another transaction holds it (a concurrent metering run, a
    customer terminating it): None then, and the caller moves on."""
    return (
        Server.objects.select_for_update(no_key=True, skip_locked=True, of=("self",))
        .select_related("plan")
        .filter(pk=server_id)
        .first()
    )


def servers_to_meter(
    *, now: dt.datetime, partition: Partition, after: tuple[uuid.UUID, uuid.UUID] | None = None
) -> QuerySet[Server]:
    """Servers a metering run at ``now`` looks at in the partition, after the keyset
    ``after`` (wallet id, server id), in (wallet, server) order: active ones with a
    started hour unpaid, and suspended ones for causes a batch lifts (never an
    operator's hold), retried every run."""
    due = Q(status=Server.Status.ACTIVE, paid_until__lt=now) | Q(
        status=Server.Status.SUSPENDED, operator_hold_since=None
    )
    return in_partition(Server.objects.filter(due), partition=partition, after=after)


def servers_to_meter_try_lock(
    *, now: dt.datetime, partition: Partition, after: tuple[uuid.UUID, uuid.UUID] | None, limit: int
) -> list[Server]:
    """The next ``limit`` servers due in the partition, locked in (wallet, server) order,
    SKIP LOCKED: one statement. A server a purchase or another worker holds is skipped,
    and picked up by the run's last pass."""
    rows = servers_to_meter(now=now, partition=partition, after=after)
    rows = rows.select_for_update(no_key=True, skip_locked=True, of=("self",))
    return list(rows.annotate(**PLAN_TERMS).annotate(**MONTH_USAGE)[:limit])


# What metering needs of each server's plan, read in the same statement (a plan model
# instance per server cost more than the statement): ``server.plan_price_per_hour``...
PLAN_TERMS = {
    "plan_price_per_hour": F("plan__price_per_hour"),
    "plan_monthly_cap": F("plan__monthly_cap"),
    "plan_currency": F("plan__currency"),
    # The month the server's next unpaid hour starts in (project time zone): the only
    # month at or after it that can have a usage record yet (every hour accrued so far
    # started before paid_until).
    "usage_month": TruncMonth("paid_until", output_field=DateField()),
}
_month_usage = Usage.objects.filter(service_id=OuterRef("pk"), month=OuterRef("usage_month"))
# What that month's usage record holds (None: no record yet), as ``server.usage_amount``...
MONTH_USAGE = {
    f"usage_{name}": Subquery(_month_usage.values(name)[:1]) for name in ("amount", "refunded", "cap")
}
