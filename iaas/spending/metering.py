"""The hourly metering run, set-based, for any context's metered services: one batch of
up to IAAS_BATCH_SIZE services is one short transaction with a constant number of
statements, whatever its size.

Per batch, in the lock order (ARCHITECTURE.md, "Batches"):
1. lock the partition's next due services in (wallet, service) order, SKIP LOCKED, with
   their rates and the usage record of the month concerned (what the cap has left);
2. lock their wallets' allowances in wallet order, SKIP LOCKED;
3. reserve the shortfalls from Billing for the whole batch (wallets SKIP LOCKED, then
   their holds), only when some allowance runs short;
4. upsert the month's usage records (hours, amounts: no row per service-hour);
5. debit each wallet's allowance by its services' total;
6. update the services: ``paid_until`` moves; refused wallets' services are suspended
   (their cause recorded), suspended ones that can pay again resume, those past their
   grace period end; and the events and history of those changes (each event shows its
   service as the API does, its month's usage returned by the UPDATE that saves it).

A wallet is paid or refused whole; a wallet locked elsewhere is deferred whole to the
run's last pass. Each hour of each service is charged exactly once, whatever runs at
once: ``paid_until`` moves in the transaction that accrues the hour, under the
service's row lock. The per-service path (``MeteredServices.bill_one``) does the same
one service at a time; tests hold the two to the same results.
"""

from __future__ import annotations

import datetime as dt
import uuid
from functools import partial

from django.utils import timezone

from . import batch, locks, usage
from .batch import BatchReport, Step
from .metered import MeteredServices


def _plan_steps(meter: MeteredServices, services: list, *, now: dt.datetime) -> list[Step]:
    """Each service's accruals (priced under the cap, counting what its usage record of
    the month concerned holds, read with the services) and, in ``detail``, its accruals
    and ``paid_until`` once paid."""
    if not services:
        return []
    spent = {  # read with the services (locks.services_to_meter_try_lock)
        s.pk: {
            s.usage_month: usage.MonthSpent(s.usage_amount, s.usage_refunded, s.usage_cap, s.usage_list_exact)
        }
        for s in services
        if s.usage_amount is not None
    }
    steps = []
    price = partial(_price, divisor=meter.divisor, tz=timezone.get_current_timezone())  # once per batch
    for service in services:
        months = spent.setdefault(service.pk, {})
        resumes = service.status == "suspended"
        if not resumes:
            hours = usage.started_hours(service.paid_until, now)
            accruals = price(service, service.paid_until, hours, months)
            paid_until = service.paid_until + hours * usage.HOUR
        else:
            # Suspended for causes the batch lifts: the hours it ran unpaid before it
            # stopped, then the hour starting now unless a paid hour still runs (as
            # MeteredServices._resume_paying does for one service).
            ran_until = service.suspended_at or service.paid_until
            owed = usage.started_hours(service.paid_until, ran_until)
            accruals = price(service, service.paid_until, owed, months)
            paid_until = service.paid_until + owed * usage.HOUR
            if paid_until <= now:
                accruals += price(service, now, 1, months)
                paid_until = now + usage.HOUR
        steps.append(
            Step(
                service,
                amount=sum(a.amount for a in accruals),
                currency=service.rate_currency,
                units=sum(a.hours for a in accruals),
                resumes=resumes,
                detail=(accruals, paid_until),
            )
        )
    return steps


def _price(
    service, start: dt.datetime, hours: int, months: dict, *, divisor: int, tz: dt.tzinfo
) -> list[usage.Accrual]:
    """Price hours and count them in ``months`` (so a later step of the same service sees
    them against the cap)."""
    accruals = usage.price_hours(
        service_id=service.pk,
        start=start,
        hours=hours,
        per_hour=service.rate_per_hour,
        cap=service.rate_cap,
        spent=months,
        divisor=divisor,
        tz=tz,
    )
    for accrual in accruals:
        before = months.get(accrual.month, usage.MonthSpent())
        months[accrual.month] = usage.MonthSpent(
            before.amount + accrual.amount,
            before.refunded,
            accrual.cap,
            before.list_exact + accrual.list_exact,
        )
    return accruals


def meter_batch(
    meter: MeteredServices,
    *,
    now: dt.datetime,
    grace: dt.timedelta,
    partition: batch.Partition,
    after: tuple[uuid.UUID, uuid.UUID] | None,
    size: int,
    skip: set | frozenset = frozenset(),
) -> BatchReport:
    """One batch, one transaction: see the module's docstring. ``skip``: services this
    run already tried (suspended ones, failures) that the last pass does not try twice."""
    model = meter.service_model
    columns = ("id", "status", "paid_until", "suspended_at", model.ENDED_AT, *model.CAUSE_UPDATE_FIELDS)
    accruals = []

    def paid(step: Step) -> None:
        service = step.service
        step_accruals, service.paid_until = step.detail
        who = usage.UsageOwner(service.wallet_id, service.owner_id, step.currency)
        accruals.extend((a, who) for a in step_accruals)

    def write(moved: list, changed: list) -> list:
        usage.upsert_accruals(meter.usage_model, accruals, now=now)
        batch.save_rows(model, moved, ("id", "paid_until"))
        # The services whose state changed are told (suspended, resumed, ended), showing
        # their usage of the month: their UPDATE returns it, no statement more.
        returning, params = usage.this_month_returning(meter.usage_model, model, now=now)
        shown = batch.save_rows(model, changed, columns, returning=returning, params=params)
        to_id = model._meta.pk.to_python
        month = {to_id(service_id): (hours, amount) for service_id, hours, amount in shown}
        for service in changed:
            service.usage_hours, service.usage_amount = month[service.pk]
        meter.close_usage_of_ended([s.pk for s in changed if s.status == model.ENDED_STATUS], now=now)
        return []

    return batch.charging_batch(
        meter.spender,
        label="metering",
        life=meter.life,
        now=now,
        grace=grace,
        partition=partition,
        after=after,
        size=size,
        skip=skip,
        lock=lambda limit: locks.services_to_meter_try_lock(
            model,
            meter.usage_model,
            terms=meter.terms,
            now=now,
            partition=partition,
            after=after,
            limit=limit,
        ),
        plan=partial(_plan_steps, meter, now=now),
        paid=paid,
        write=write,
    )


def meter_partition(
    meter: MeteredServices,
    *,
    now: dt.datetime,
    grace: dt.timedelta,
    partition: batch.Partition,
    size: int | None = None,
) -> BatchReport:
    """A worker's share of a metering run (iaas.spending.batch.walk_partition)."""

    def one_by_one(*, after, size: int, skip: set) -> BatchReport:
        due = locks.services_to_meter(meter.service_model, now=now, partition=partition, after=after)
        keys = list(due.values_list("wallet_id", "id")[:size])
        return batch.one_by_one(
            keys=keys,
            size=size,
            skip=skip,
            work=lambda service_id: meter.bill_one(service_id=service_id, now=now, grace=grace),
            noun=meter.noun,
            units=lambda outcome: outcome.hours,
        )

    return batch.walk_partition(
        run_batch=partial(meter_batch, meter, now=now, grace=grace, partition=partition),
        one_by_one=one_by_one,
        partition=partition,
        size=size,
        label=f"{meter.spender.context} metering",
    )


def dry_run(meter: MeteredServices, *, now: dt.datetime) -> list[dict]:
    """What a run at ``now`` would accrue for each active service (read only; suspended
    services are not tried)."""
    due = []
    services = locks.services_to_meter(meter.service_model, now=now, partition=batch.Partition())
    for service in services.filter(status="active").annotate(**meter.terms).iterator():
        accruals = meter.usage_due(service, now=now)
        if accruals:
            due.append(
                {
                    "service_id": str(service.pk),
                    "hours": sum(a.hours for a in accruals),
                    "amount": sum(a.amount for a in accruals),
                    "currency": service.rate_currency,
                }
            )
    return due
