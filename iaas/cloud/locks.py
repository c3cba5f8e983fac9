"""Every row lock Cloud takes, in one place, so the lock order can be read here
(ARCHITECTURE.md): the server row, then Cloud's allowance row, then (inside Billing)
the wallet and the hold. A batch takes each class of row in key order, SKIP LOCKED."""

from __future__ import annotations

import datetime as dt
import uuid

from django.db.models import F, Q, QuerySet

from iaas.contracts.errors import NotFound
from iaas.spending.batch import Partition, in_partition

from .models import Server


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
    return list(
        rows.select_for_update(no_key=True, skip_locked=True, of=("self",)).annotate(**PLAN_TERMS)[:limit]
    )


# What metering needs of each server's plan, read in the same statement (a plan model
# instance per server cost more than the statement): ``server.plan_price_per_hour``...
PLAN_TERMS = {
    "plan_price_per_hour": F("plan__price_per_hour"),
    "plan_monthly_cap": F("plan__monthly_cap"),
    "plan_currency": F("plan__currency"),
}
