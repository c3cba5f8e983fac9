"""Every row lock Hosting takes, in one place, so the lock order can be read here
(ARCHITECTURE.md): the subscription row, then Hosting's allowance row, then (inside
Billing) the wallet and the hold. A batch takes each class of row in key order, SKIP
LOCKED."""

from __future__ import annotations

import datetime as dt
import uuid

from django.db.models import Q, QuerySet

from iaas.contracts.errors import NotFound
from iaas.spending.batch import Partition, in_partition

from .models import Subscription


def subscription_lock(subscription_id: uuid.UUID, *, owner_id: int | None = None) -> Subscription:
    rows = Subscription.objects.select_for_update(no_key=True)
    if owner_id is not None:
        rows = rows.filter(owner_id=owner_id)
    try:
        return rows.get(pk=subscription_id)
    except Subscription.DoesNotExist:
        raise NotFound("No such subscription.") from None


def subscription_try_lock(subscription_id: uuid.UUID) -> Subscription | None:
    """Lock a subscription unless another transaction holds it: None then."""
    return (
        Subscription.objects.select_for_update(no_key=True, skip_locked=True, of=("self",))
        .select_related("plan")
        .filter(pk=subscription_id)
        .first()
    )


def subscriptions_to_renew(
    *, now: dt.datetime, partition: Partition, after: tuple[uuid.UUID, uuid.UUID] | None = None
) -> QuerySet[Subscription]:
    """Subscriptions a renewal run at ``now`` looks at in the partition, after the keyset
    ``after`` (wallet id, subscription id), in (wallet, subscription) order: active ones
    whose period has ended, and suspended ones for causes a batch lifts (never an
    operator's hold). Never a cancelled one."""
    due = Q(status=Subscription.Status.ACTIVE, current_period_end__lte=now) | Q(
        status=Subscription.Status.SUSPENDED, operator_hold_since=None
    )
    return in_partition(Subscription.objects.filter(due), partition=partition, after=after)


def subscriptions_to_renew_try_lock(
    *, now: dt.datetime, partition: Partition, after: tuple[uuid.UUID, uuid.UUID] | None, limit: int
) -> list[Subscription]:
    """The next ``limit`` subscriptions due in the partition, locked in (wallet,
    subscription) order, SKIP LOCKED: one statement."""
    rows = subscriptions_to_renew(now=now, partition=partition, after=after)
    return list(
        rows.select_for_update(no_key=True, skip_locked=True, of=("self",)).select_related("plan")[:limit]
    )
