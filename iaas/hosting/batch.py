"""The renewal run, set-based, in the same batch shape as metering (iaas.spending.batch):
one batch of up to IAAS_BATCH_SIZE subscriptions is one short transaction with a
constant number of statements, whatever its size.

Per batch, in the lock order (ARCHITECTURE.md, "Batches"):
1. lock the partition's next due subscriptions in (wallet, subscription) order, SKIP LOCKED;
2. lock their wallets' Hosting allowances in wallet order, SKIP LOCKED;
3. reserve the shortfalls from Billing for the whole batch (wallets SKIP LOCKED, then
   their holds), only when some allowance runs short;
4. debit each wallet's allowance by its subscriptions' total;
5. insert the months' charges (a month is a one-off price: an immutable charge at once)
   and publish one ChargesRecorded per wallet;
6. update the subscriptions: ``current_period_end`` moves a month per month paid;
   refused wallets' subscriptions are suspended (their cause recorded), suspended ones
   that can pay again resume (a new month from now when their paid period has ended),
   those unpaid alone past the grace period are cancelled; and the events and history of
   those changes.

A wallet is paid or refused whole; a wallet locked elsewhere is deferred to the run's
last pass. A month is charged once whatever runs at once: ``current_period_end`` moves in
the transaction that records the charge, under the subscription's row lock. The
per-subscription path in ``services`` (``subscription_renew``) does the same one at a
time; tests hold the two to the same results.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from functools import partial

from django.utils import timezone

from iaas.spending import batch
from iaas.spending.batch import BatchReport, Step

from . import locks
from .models import Charge, Subscription
from .services import month_after
from .spending import spender, subscriptions

logger = logging.getLogger(__name__)

SUBSCRIPTION_COLUMNS = (
    "id",
    "status",
    "current_period_end",
    "period_anchor",
    "suspended_at",
    "cancelled_at",
    *Subscription.CAUSE_UPDATE_FIELDS,
)
LIFE = batch.Life(
    suspended=lambda s, **why: subscriptions.suspended(s, **why),
    resumed=lambda s: subscriptions.resumed(s),
    ended=lambda s: subscriptions.ended(s, reason="unpaid"),
    ended_status=Subscription.Status.CANCELLED,
    ended_at="cancelled_at",
    ended_action="cancelled",
    history_action="cancel",
    actor_label="renew_subscriptions",
)


def _months_due(
    subscription: Subscription, *, now: dt.datetime
) -> tuple[list[tuple], dt.datetime, dt.datetime]:
    """The months a subscription pays for at ``now`` as (start, end, what) spans, its
    period end once paid and its anchor: every month whose start has come for an active
    one; for a suspended one, a new month from now when its paid period has ended
    (the months it was off are never charged), else nothing (as services._resume_paying)."""
    if subscription.status == Subscription.Status.SUSPENDED:
        if subscription.current_period_end > now:
            return [], subscription.current_period_end, subscription.period_anchor
        end = month_after(now, now)
        return [(now, end, "resumed,")], end, now
    months, start = [], subscription.current_period_end
    while start <= now:
        end = month_after(subscription.period_anchor, start)
        months.append((start, end, "renewal"))
        start = end
    return months, start, subscription.period_anchor


def _plan_steps(subscriptions: list[Subscription], *, now: dt.datetime) -> list[Step]:
    steps = []
    for subscription in subscriptions:
        months, period_end, anchor = _months_due(subscription, now=now)
        price = subscription.plan.price_per_month
        steps.append(
            Step(
                subscription,
                amount=price * len(months),
                currency=subscription.plan.currency,
                units=len(months),
                resumes=subscription.status == Subscription.Status.SUSPENDED,
                detail=(months, period_end, anchor),
            )
        )
    return steps


def _charge(subscription: Subscription, start: dt.datetime, end: dt.datetime, what: str, now) -> Charge:
    return Charge(
        wallet_id=subscription.wallet_id,
        owner_id=subscription.owner_id,
        amount=subscription.plan.price_per_month,
        currency=subscription.plan.currency,
        description=(
            f"Hosting {subscription.domain} ({subscription.plan_id}), {what} "
            f"{timezone.localtime(start):%Y-%m-%d} to {timezone.localtime(end):%Y-%m-%d}"
        )[:255],
        subject_id=subscription.id,
        period_start=start,
        period_end=end,
        transaction_date=start,
        created_at=now,
    )


def renew_batch(
    *,
    now: dt.datetime,
    grace: dt.timedelta,
    partition: batch.Partition,
    after: tuple[uuid.UUID, uuid.UUID] | None,
    size: int,
    skip: set | frozenset = frozenset(),
) -> BatchReport:
    """One batch, one transaction: see the module's docstring."""
    charges = []

    def paid(step: Step) -> None:
        subscription = step.service
        months, subscription.current_period_end, subscription.period_anchor = step.detail
        charges.extend(_charge(subscription, start, end, what, now) for start, end, what in months)

    def write(moved: list[Subscription], changed: list[Subscription]) -> list:
        Charge.objects.bulk_create(charges)
        batch.save_rows(Subscription, moved, ("id", "current_period_end", "period_anchor"))
        batch.save_rows(Subscription, changed, SUBSCRIPTION_COLUMNS)
        return _charges_recorded(charges)

    return batch.charging_batch(
        spender,
        label="renewal",
        life=LIFE,
        now=now,
        grace=grace,
        partition=partition,
        after=after,
        size=size,
        skip=skip,
        lock=lambda limit: locks.subscriptions_to_renew_try_lock(
            now=now, partition=partition, after=after, limit=limit
        ),
        plan=partial(_plan_steps, now=now),
        paid=paid,
        write=write,
    )


def _charges_recorded(charges: list[Charge]):
    """One ChargesRecorded per wallet: Billing books one ledger entry for each."""
    by_wallet: dict[tuple[uuid.UUID, str], list[Charge]] = {}
    for charge in charges:
        by_wallet.setdefault((charge.wallet_id, charge.currency), []).append(charge)
    return [
        spender.charges_recorded(wallet_id=wallet_id, currency=currency, charges=wallet_charges)
        for (wallet_id, currency), wallet_charges in sorted(
            by_wallet.items(), key=lambda item: str(item[0][0])
        )
    ]


def renew_partition(
    *, now: dt.datetime, grace: dt.timedelta, partition: batch.Partition, size: int | None = None
) -> BatchReport:
    """A worker's share of a renewal run (iaas.spending.batch.walk_partition)."""
    from . import services  # the per-subscription path, for a batch that fails

    def one_by_one(*, after, size: int, skip: set) -> BatchReport:
        rows = locks.subscriptions_to_renew(now=now, partition=partition, after=after)
        return batch.one_by_one(
            keys=list(rows.values_list("wallet_id", "id")[:size]),
            size=size,
            skip=skip,
            work=lambda subscription_id: services.subscription_renew(
                subscription_id=subscription_id, now=now
            ),
            noun="subscription",
            units=lambda outcome: outcome.months,
            action=lambda outcome: "charged" if outcome.action == "renewed" else outcome.action,
        )

    return batch.walk_partition(
        run_batch=partial(renew_batch, now=now, grace=grace, partition=partition),
        one_by_one=one_by_one,
        partition=partition,
        size=size,
        label="renewal",
    )
