"""Hosting's writes: buying, renewing, suspending, resuming and cancelling subscriptions.

Lock order (ARCHITECTURE.md): the subscription row, then Hosting's allowance row, then
(inside Billing's reserve) the wallet row and the hold.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from dateutil.relativedelta import relativedelta
from django.utils import timezone

from iaas.common.db import retry_transaction
from iaas.contracts import bus
from iaas.contracts.errors import DomainError, DomainTaken, InvalidState, ServiceBusy
from iaas.contracts.types import Money
from iaas.spending import catalog, lifecycle
from iaas.spending.models import SuspensionCause

from .locks import subscription_lock, subscription_try_lock
from .models import HostingPlan, Subscription
from .spending import spender, subscriptions

MONTH = relativedelta(months=1)
BATCH = "renew_subscriptions"  # how the renewal run signs what it changes


def month_after(anchor: dt.datetime, start: dt.datetime) -> dt.datetime:
    """The end of the monthly period that starts at ``start``, counted on the anchor's
    day of the month (no drift: Jan 31 -> Feb 28 -> Mar 31)."""
    months = (start.year - anchor.year) * 12 + (start.month - anchor.month) + 1
    return anchor + relativedelta(months=months)


@retry_transaction
def subscription_create(*, owner_id: int, wallet_id: uuid.UUID, domain: str, plan_id: str) -> Subscription:
    """Buy a hosting plan for a domain: the first month is charged at once out of
    Hosting's allowance. On any refusal nothing is created; a domain taken is a 409.
    With a reservation, six statements (as Cloud's purchase); inside the allowance,
    three."""
    now = timezone.now()
    subscription = Subscription(
        owner_id=owner_id,
        wallet_id=wallet_id,
        domain=domain.lower(),
        plan_id=plan_id,
        current_period_end=now + MONTH,
        period_anchor=now,
    )
    try:
        plan = catalog.insert_from_plan(
            subscription,
            plan_model=HostingPlan,
            plan_id=plan_id,
            terms=("price_per_month", "currency"),
            unique=True,
        )
    except catalog.Taken:
        raise DomainTaken() from None
    spender.spend(
        wallet_id=wallet_id,
        owner_id=owner_id,
        price=Money(plan["price_per_month"], plan["currency"]),
        description=f"Hosting {subscription.domain} ({plan_id}), first month",
        subject_id=subscription.id,
        period_start=now,
        period_end=subscription.current_period_end,
        transaction_date=now,
    )
    return subscription


@retry_transaction
def subscription_cancel(
    *, subscription_id: uuid.UUID, owner_id: int | None = None, reason: str = "customer"
) -> Subscription:
    """Cancel: the service runs to the end of the paid period and is not renewed."""
    subscription = subscription_lock(subscription_id, owner_id=owner_id)
    if subscription.status == Subscription.Status.CANCELLED:
        return subscription
    _mark_cancelled(subscription, at=timezone.now(), reason=reason)
    return subscription


def _mark_cancelled(subscription: Subscription, *, at: dt.datetime, reason: str) -> None:
    """Cancel a locked subscription and say so (SubscriptionCancelled)."""
    subscription.status = Subscription.Status.CANCELLED
    subscription.cancelled_at = at
    subscription.save(update_fields=["status", "cancelled_at"])
    bus.publish(subscriptions.ended(subscription, reason=reason))


@retry_transaction
def subscription_suspend(
    *, subscription_id: uuid.UUID, reason: str, actor_id: int | None = None
) -> Subscription:
    """An operator suspends a subscription (cause ``operator``, with a reason). One
    already suspended for another cause gains this one; it runs again only when every
    cause is lifted, and nothing cancels it while an operator holds it."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidState("An operator's suspension needs a reason.")
    subscription = subscription_lock(subscription_id)
    if subscription.status == Subscription.Status.CANCELLED:
        raise InvalidState("A cancelled subscription cannot be suspended.")
    if subscription.has_cause(SuspensionCause.OPERATOR):
        raise InvalidState("This subscription is already suspended by an operator.")
    before = lifecycle.snapshot(subscription)
    _suspend_for(subscription, SuspensionCause.OPERATOR, at=timezone.now(), reason=reason)
    lifecycle.record(subscription, before, action="suspend", actor_id=actor_id, reason=reason)
    return subscription


def _suspend_for(subscription: Subscription, cause: str, *, at: dt.datetime, reason: str = "") -> None:
    """Record ``cause`` on a locked subscription; an active one stops."""
    subscription.add_cause(cause, at=at, reason=reason)
    _save_causes(subscription, stopped_at=at)


def _save_causes(subscription: Subscription, *, stopped_at: dt.datetime) -> None:
    """Save a locked subscription's causes; when it was active and now has one, it stops
    (SubscriptionSuspended)."""
    lifecycle.save_causes(
        subscription,
        stopped_at=stopped_at,
        suspended=lambda **why: subscriptions.suspended(subscription, **why),
    )


@retry_transaction
def subscription_resume(
    *, subscription_id: uuid.UUID, now: dt.datetime | None = None, actor_id: int | None = None
) -> Subscription:
    """An operator resumes a subscription: every cause is lifted, charged as the batch
    run's resumption is (a paid period still running is kept and nothing is charged;
    after it ended, a new month from now, charged now). When the wallet refuses,
    nothing changes and the refusal is raised."""
    subscription = subscription_lock(subscription_id)
    if subscription.status != Subscription.Status.SUSPENDED:
        raise InvalidState(
            f"Only a suspended subscription can be resumed (this one is {subscription.status})."
        )
    before = lifecycle.snapshot(subscription)
    _resume_paying(subscription, now=now or timezone.now())
    lifecycle.record(subscription, before, action="resume", actor_id=actor_id)
    return subscription


@retry_transaction
def subscription_lift_operator_hold(
    *, subscription_id: uuid.UUID, now: dt.datetime | None = None, actor_id: int | None = None
) -> Subscription:
    """An operator lifts their own hold. When no other cause holds it resumes, charged
    as ``subscription_resume`` (a refusal changes nothing); when it is also unpaid or
    its wallet is blocked, it stays suspended for those and the renewal runs take over."""
    subscription = subscription_lock(subscription_id)
    if not subscription.has_cause(SuspensionCause.OPERATOR):
        raise InvalidState("This subscription is not suspended by an operator.")
    before = lifecycle.snapshot(subscription)
    subscription.lift_cause(SuspensionCause.OPERATOR)
    if subscription.suspension_causes:
        subscription.save(update_fields=Subscription.CAUSE_UPDATE_FIELDS)
    else:
        _resume_paying(subscription, now=now or timezone.now())
    lifecycle.record(subscription, before, action="lift_operator_hold", actor_id=actor_id)
    return subscription


def _resume_paying(subscription: Subscription, *, now: dt.datetime) -> int:
    """Resume a locked, suspended subscription. Inside its paid period nothing is
    charged and the period is kept; once it has ended, a new month from now is charged
    (the months it was off are never charged). Every path that resumes a subscription
    comes here, so a period is charged once whoever resumes it. Returns the amount."""
    amount = 0
    fields = ["status", "suspended_at", *Subscription.CAUSE_UPDATE_FIELDS]
    if subscription.current_period_end <= now:
        subscription.period_anchor = now
        subscription.current_period_end = _charge_month(subscription, start=now, what="resumed,")
        amount = subscription.plan.price_per_month
        fields += ["period_anchor", "current_period_end"]
    for cause in subscription.suspension_causes:
        subscription.lift_cause(cause)
    subscription.status = Subscription.Status.ACTIVE
    subscription.suspended_at = None
    subscription.save(update_fields=fields)
    bus.publish(subscriptions.resumed(subscription))
    return amount


def hosting_grace() -> dt.timedelta:
    return subscriptions.grace()


def subscription_cancels_at(subscription: Subscription) -> dt.datetime | None:
    """When renew_subscriptions cancels this subscription: the grace period after it
    became unpaid, while that is its only cause; None when no clock runs."""
    return subscriptions.terminates_at(subscription)


def allowance_release(*, wallet_id: uuid.UUID, reason: str, amount: int | None = None):
    """Give Hosting's unused allowance for a wallet back to Billing."""
    return spender.release(wallet_id=wallet_id, reason=reason, amount=amount)


# --- Renewals (renew_subscriptions) -----------------------------------------------------------
#
# An active subscription whose period has ended is renewed for a month and charged that
# month, one month per transaction, under the subscription's row lock (SKIP LOCKED):
# ``current_period_end`` moves with the charge, so a month is charged once however many
# runs there are. Refused: suspended for the refusal's cause. One suspended for unpaid
# or a blocked wallet is resumed once the wallet can pay (a new month from now when its
# paid period has ended), and cancelled once unpaid alone past the grace period. An
# operator's hold is never lifted here. A cancelled one is never renewed.


@dataclass(frozen=True, slots=True)
class RenewalOutcome:
    subscription_id: uuid.UUID
    wallet_id: uuid.UUID | None
    action: str  # see ACTIONS
    months: int = 0
    amount: int = 0
    currency: str = ""

    ACTIONS = ("renewed", "up_to_date", "suspended", "resumed", "still_suspended", "cancelled", "busy")


def _charge_month(subscription: Subscription, *, start: dt.datetime, what: str) -> dt.datetime:
    end = month_after(subscription.period_anchor, start)
    spender.spend(
        wallet_id=subscription.wallet_id,
        owner_id=subscription.owner_id,
        price=Money(subscription.plan.price_per_month, subscription.plan.currency),
        description=(
            f"Hosting {subscription.domain} ({subscription.plan_id}), {what} "
            f"{timezone.localtime(start):%Y-%m-%d} to {timezone.localtime(end):%Y-%m-%d}"
        ),
        subject_id=subscription.id,
        period_start=start,
        period_end=end,
        transaction_date=start,
    )
    return end


@retry_transaction
def _subscription_renew_once(*, subscription_id: uuid.UUID, now: dt.datetime) -> RenewalOutcome:
    subscription = subscription_try_lock(subscription_id)
    if subscription is None:
        return RenewalOutcome(subscription_id, None, "busy")
    if subscription.status != Subscription.Status.ACTIVE or subscription.current_period_end > now:
        return RenewalOutcome(subscription.id, subscription.wallet_id, "up_to_date")
    subscription.current_period_end = _charge_month(
        subscription, start=subscription.current_period_end, what="renewal"
    )
    subscription.save(update_fields=["current_period_end"])
    plan = subscription.plan
    return RenewalOutcome(
        subscription.id, subscription.wallet_id, "renewed", 1, plan.price_per_month, plan.currency
    )


@retry_transaction
def _subscription_suspend_refused(
    *, subscription_id: uuid.UUID, now: dt.datetime, refusal: DomainError
) -> bool:
    """The renewal was refused and rolled back: suspend for the refusal's cause, unless
    another run renewed it."""
    subscription = subscription_lock(subscription_id)
    if subscription.status != Subscription.Status.ACTIVE or subscription.current_period_end > now:
        return False
    before = lifecycle.snapshot(subscription)
    lifecycle.record_refusal(subscription, refusal, at=now)
    _save_causes(subscription, stopped_at=now)
    lifecycle.record(subscription, before, action="suspend", actor_label=BATCH, reason=refusal.code)
    return True


def _batch_may_resume(subscription: Subscription) -> bool:
    """The batch lifts only its own causes: never an operator's hold."""
    return subscription.status == Subscription.Status.SUSPENDED and not subscription.has_cause(
        SuspensionCause.OPERATOR
    )


@retry_transaction
def _subscription_resume_paid(*, subscription_id: uuid.UUID, now: dt.datetime) -> RenewalOutcome:
    """A subscription suspended for unpaid or a blocked wallet whose wallet can pay now."""
    subscription = subscription_try_lock(subscription_id)
    if subscription is None:
        return RenewalOutcome(subscription_id, None, "busy")
    if not _batch_may_resume(subscription):
        return RenewalOutcome(subscription.id, subscription.wallet_id, "up_to_date")
    before = lifecycle.snapshot(subscription)
    amount = _resume_paying(subscription, now=now)
    lifecycle.record(subscription, before, action="resume", actor_label=BATCH)
    return RenewalOutcome(
        subscription.id,
        subscription.wallet_id,
        "resumed",
        1 if amount else 0,
        amount,
        subscription.plan.currency,
    )


@retry_transaction
def _subscription_stays_suspended(
    *, subscription_id: uuid.UUID, now: dt.datetime, refusal: DomainError
) -> RenewalOutcome:
    """The resumption was refused: record why, and cancel a subscription unpaid (alone)
    for longer than the hosting grace period."""
    subscription = subscription_lock(subscription_id)
    if not _batch_may_resume(subscription):
        return RenewalOutcome(subscription.id, subscription.wallet_id, "up_to_date")
    before = lifecycle.snapshot(subscription)
    lifecycle.record_refusal(subscription, refusal, at=now)
    subscription.save(update_fields=Subscription.CAUSE_UPDATE_FIELDS)
    if lifecycle.is_overdue(subscription, now=now, grace=hosting_grace()):
        _mark_cancelled(subscription, at=now, reason="unpaid")
        lifecycle.record(subscription, before, action="cancel", actor_label=BATCH, reason="unpaid")
        return RenewalOutcome(subscription.id, subscription.wallet_id, "cancelled")
    lifecycle.record(subscription, before, action="change_causes", actor_label=BATCH, reason=refusal.code)
    return RenewalOutcome(subscription.id, subscription.wallet_id, "still_suspended")


def subscription_renew(*, subscription_id: uuid.UUID, now: dt.datetime) -> RenewalOutcome:
    """Renew one subscription at ``now``: every month whose start has come, one
    transaction each; suspend when the wallet refuses (for the refusal's cause); resume
    one suspended for unpaid or a blocked wallet when it can pay, cancel it once unpaid
    alone past the grace period; never touch an operator's hold. A subscription
    another transaction holds is "busy"."""
    row = Subscription.objects.filter(pk=subscription_id).values("status", "wallet_id").first()
    if row is None or row["status"] == Subscription.Status.CANCELLED:
        return RenewalOutcome(subscription_id, row and row["wallet_id"], "up_to_date")
    if row["status"] == Subscription.Status.SUSPENDED:
        try:
            return _subscription_resume_paid(subscription_id=subscription_id, now=now)
        except ServiceBusy:
            raise
        except DomainError as refusal:
            return _subscription_stays_suspended(subscription_id=subscription_id, now=now, refusal=refusal)
    months, amount, currency = 0, 0, ""
    while True:
        try:
            outcome = _subscription_renew_once(subscription_id=subscription_id, now=now)
        except ServiceBusy:
            raise
        except DomainError as refusal:
            if _subscription_suspend_refused(subscription_id=subscription_id, now=now, refusal=refusal):
                return RenewalOutcome(
                    subscription_id, row["wallet_id"], "suspended", months, amount, currency
                )
            break
        if outcome.action != "renewed":
            if months == 0:
                return outcome
            break
        months, amount, currency = months + 1, amount + outcome.amount, outcome.currency
    return RenewalOutcome(subscription_id, row["wallet_id"], "renewed", months, amount, currency)


def subscription_renewals_due(*, subscription_id: uuid.UUID, now: dt.datetime) -> tuple[int, int, str]:
    """Months an active subscription is due at ``now`` and their price (for --dry-run)."""
    subscription = Subscription.objects.select_related("plan").get(pk=subscription_id)
    if subscription.status != Subscription.Status.ACTIVE:
        return 0, 0, subscription.plan.currency
    months, end = 0, subscription.current_period_end
    while end <= now:
        months, end = months + 1, month_after(subscription.period_anchor, end)
    return months, months * subscription.plan.price_per_month, subscription.plan.currency


def allowance_release_after_batch(*, wallet_ids) -> int:
    """What a metering or renewal run that reserved ahead left on the wallets it charged,
    given back when it finishes."""
    return spender.release_after_batch(wallet_ids=wallet_ids)
