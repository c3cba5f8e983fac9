"""Hosting's writes: buying, suspending, resuming and cancelling subscriptions.

Lock order (ARCHITECTURE.md): the subscription row, then Hosting's allowance row, then
(inside Billing's reserve) the wallet row and the hold.
"""

from __future__ import annotations

import uuid

from dateutil.relativedelta import relativedelta
from django.db import IntegrityError, transaction
from django.utils import timezone

from iaas.common.db import retry_transaction
from iaas.contracts import bus
from iaas.contracts.errors import DomainTaken, InvalidState, NotFound
from iaas.contracts.events import SubscriptionCancelled, SubscriptionResumed, SubscriptionSuspended
from iaas.contracts.types import Money

from .models import HostingPlan, Subscription
from .spending import spender

MONTH = relativedelta(months=1)


def subscription_lock(subscription_id: uuid.UUID, *, owner_id: int | None = None) -> Subscription:
    rows = Subscription.objects.select_for_update(no_key=True)
    if owner_id is not None:
        rows = rows.filter(owner_id=owner_id)
    try:
        return rows.get(pk=subscription_id)
    except Subscription.DoesNotExist:
        raise NotFound("No such subscription.") from None


@retry_transaction
def subscription_create(*, owner_id: int, wallet_id: uuid.UUID, domain: str, plan_id: str) -> Subscription:
    """Buy a hosting plan for a domain: the first month is charged at once out of
    Hosting's allowance. On any refusal nothing is created."""
    plan = HostingPlan.objects.filter(pk=plan_id, is_active=True).first()
    if plan is None:
        raise NotFound(f"No such plan: {plan_id}.")
    now = timezone.now()
    try:
        with transaction.atomic():
            subscription = Subscription.objects.create(
                owner_id=owner_id,
                wallet_id=wallet_id,
                domain=domain.lower(),
                plan=plan,
                current_period_end=now + MONTH,
            )
    except IntegrityError:
        raise DomainTaken() from None
    spender.spend(
        wallet_id=wallet_id,
        owner_id=owner_id,
        price=Money(plan.price_per_month, plan.currency),
        description=f"Hosting {subscription.domain} ({plan.id}), first month",
        subject_id=subscription.id,
        period_start=now,
        period_end=subscription.current_period_end,
        transaction_date=now,
    )
    return subscription


@retry_transaction
def subscription_cancel(*, subscription_id: uuid.UUID, owner_id: int | None = None) -> Subscription:
    """Cancel: the service runs to the end of the paid period and is not renewed."""
    subscription = subscription_lock(subscription_id, owner_id=owner_id)
    if subscription.status == Subscription.Status.CANCELLED:
        return subscription
    subscription.status = Subscription.Status.CANCELLED
    subscription.cancelled_at = timezone.now()
    subscription.save(update_fields=["status", "cancelled_at"])
    bus.publish(SubscriptionCancelled(subscription_id=subscription.id, wallet_id=subscription.wallet_id))
    return subscription


@retry_transaction
def subscription_suspend(*, subscription_id: uuid.UUID, reason: str) -> Subscription:
    subscription = subscription_lock(subscription_id)
    if subscription.status != Subscription.Status.ACTIVE:
        raise InvalidState(
            f"Only an active subscription can be suspended (this one is {subscription.status})."
        )
    subscription.status = Subscription.Status.SUSPENDED
    subscription.suspended_at = timezone.now()
    subscription.save(update_fields=["status", "suspended_at"])
    bus.publish(
        SubscriptionSuspended(
            subscription_id=subscription.id, wallet_id=subscription.wallet_id, reason=reason
        )
    )
    return subscription


@retry_transaction
def subscription_resume(*, subscription_id: uuid.UUID) -> Subscription:
    subscription = subscription_lock(subscription_id)
    if subscription.status != Subscription.Status.SUSPENDED:
        raise InvalidState(
            f"Only a suspended subscription can be resumed (this one is {subscription.status})."
        )
    subscription.status = Subscription.Status.ACTIVE
    subscription.suspended_at = None
    subscription.save(update_fields=["status", "suspended_at"])
    bus.publish(SubscriptionResumed(subscription_id=subscription.id, wallet_id=subscription.wallet_id))
    return subscription


def allowance_release(*, wallet_id: uuid.UUID, reason: str, amount: int | None = None):
    """Give Hosting's unused allowance for a wallet back to Billing."""
    with transaction.atomic():
        return spender.release(wallet_id=wallet_id, reason=reason, amount=amount)
