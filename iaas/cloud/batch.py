"""The hourly metering run, set-based: one batch of up to IAAS_BATCH_SIZE servers is one
short transaction with a constant number of statements, whatever its size.

Per batch, in the lock order (ARCHITECTURE.md, "Batches"):
1. lock the partition's next due servers in (wallet, server) order, SKIP LOCKED;
2. read their usage records of the months concerned (what the cap has left);
3. lock their wallets' Cloud allowances in wallet order, SKIP LOCKED;
4. reserve the shortfalls from Billing for the whole batch (wallets SKIP LOCKED, then
   their holds), only when some allowance runs short;
5. upsert the month's usage records (hours, amounts: no row per service-hour);
6. debit each wallet's allowance by its servers' total;
7. update the servers: ``paid_until`` moves; refused wallets' servers are suspended
   (their cause recorded), suspended ones that can pay again resume, those past their
   grace period terminate; and the events and history of those changes.

A wallet is paid or refused whole; a wallet locked elsewhere is deferred whole to the
run's last pass. Each hour of each server is charged exactly once, whatever runs at
once: ``paid_until`` moves in the transaction that accrues the hour, under the server's
row lock. The per-server path in ``services`` (``server_bill_usage``) does the same one
server at a time; tests hold the two to the same results.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from functools import partial

from django.db.models import F
from django.utils import timezone

from iaas.contracts.events import ServerResumed, ServerSuspended, ServerTerminated
from iaas.spending import batch, usage
from iaas.spending.batch import BatchReport, Step

from . import locks
from .models import Server, Usage
from .spending import spender

logger = logging.getLogger(__name__)

HOUR = usage.HOUR
SERVER_COLUMNS = (
    "id",
    "status",
    "paid_until",
    "suspended_at",
    "terminated_at",
    *Server.CAUSE_UPDATE_FIELDS,
)
LIFE = batch.Life(
    suspended=lambda s, **why: ServerSuspended(server_id=s.id, wallet_id=s.wallet_id, **why),
    resumed=lambda s: ServerResumed(server_id=s.id, wallet_id=s.wallet_id),
    ended=lambda s: ServerTerminated(server_id=s.id, wallet_id=s.wallet_id, reason="unpaid"),
    ended_status=Server.Status.TERMINATED,
    ended_at="terminated_at",
    ended_action="terminated",
    history_action="terminate",
    actor_label="bill_usage",
)


def _plan_steps(servers: list[Server], *, now: dt.datetime) -> list[Step]:
    """Each server's accruals (priced under the cap, counting what its usage record of
    the month concerned holds, read with the servers) and, in ``detail``, its accruals
    and ``paid_until`` once paid."""
    if not servers:
        return []
    spent = {  # read with the servers (locks.MONTH_USAGE)
        s.id: {s.usage_month: usage.MonthSpent(s.usage_amount, s.usage_refunded, s.usage_cap)}
        for s in servers
        if s.usage_amount is not None
    }
    steps = []
    price = partial(_price, tz=timezone.get_current_timezone())  # once for the batch
    for server in servers:
        months = spent.setdefault(server.id, {})
        resumes = server.status == Server.Status.SUSPENDED
        if not resumes:
            hours = usage.started_hours(server.paid_until, now)
            accruals = price(server, server.paid_until, hours, months)
            paid_until = server.paid_until + hours * HOUR
        else:
            # Suspended for causes the batch lifts: the hours it ran unpaid before it
            # stopped, then the hour starting now unless a paid hour still runs (as
            # services._resume_paying does for one server).
            ran_until = server.suspended_at or server.paid_until
            owed = usage.started_hours(server.paid_until, ran_until)
            accruals = price(server, server.paid_until, owed, months)
            paid_until = server.paid_until + owed * HOUR
            if paid_until <= now:
                accruals += price(server, now, 1, months)
                paid_until = now + HOUR
        steps.append(
            Step(
                server,
                amount=sum(a.amount for a in accruals),
                currency=server.plan_currency,
                units=sum(a.hours for a in accruals),
                resumes=resumes,
                detail=(accruals, paid_until),
            )
        )
    return steps


def _price(
    server: Server, start: dt.datetime, hours: int, months: dict, *, tz: dt.tzinfo
) -> list[usage.Accrual]:
    """Price hours and count them in ``months`` (so a later step of the same server sees
    them against the cap)."""
    accruals = usage.price_hours(
        service_id=server.id,
        start=start,
        hours=hours,
        price_per_hour=server.plan_price_per_hour,
        cap=server.plan_monthly_cap,
        spent=months,
        tz=tz,
    )
    for accrual in accruals:
        before = months.get(accrual.month, usage.MonthSpent())
        months[accrual.month] = usage.MonthSpent(before.amount + accrual.amount, before.refunded, accrual.cap)
    return accruals


def meter_batch(
    *,
    now: dt.datetime,
    grace: dt.timedelta,
    partition: batch.Partition,
    after: tuple[uuid.UUID, uuid.UUID] | None,
    size: int,
    skip: set | frozenset = frozenset(),
) -> BatchReport:
    """One batch, one transaction: see the module's docstring. ``skip``: servers this run
    already tried (suspended ones, failures) that the last pass does not try twice."""
    accruals = []

    def paid(step: Step) -> None:
        server = step.service
        step_accruals, server.paid_until = step.detail
        who = usage.UsageOwner(server.wallet_id, server.owner_id, step.currency)
        accruals.extend((a, who) for a in step_accruals)

    def write(moved: list[Server], changed: list[Server]) -> list:
        usage.upsert_accruals(Usage, accruals, now=now)
        batch.save_rows(Server, moved, ("id", "paid_until"))
        batch.save_rows(Server, changed, SERVER_COLUMNS)
        _close_usage_of_ended([s.id for s in changed if s.status == Server.Status.TERMINATED], now=now)
        return []

    return batch.charging_batch(
        spender,
        label="metering",
        life=LIFE,
        now=now,
        grace=grace,
        partition=partition,
        after=after,
        size=size,
        skip=skip,
        lock=lambda limit: locks.servers_to_meter_try_lock(
            now=now, partition=partition, after=after, limit=limit
        ),
        plan=partial(_plan_steps, now=now),
        paid=paid,
        write=write,
    )


def _close_usage_of_ended(server_ids: list[uuid.UUID], *, now: dt.datetime) -> None:
    """A service that ends has its open usage closed by the next settlement run."""
    if server_ids:
        Usage.objects.filter(service_id__in=server_ids, amount__gt=F("closed_amount")).update(
            close_due_at=now
        )


def meter_partition(
    *, now: dt.datetime, grace: dt.timedelta, partition: batch.Partition, size: int | None = None
) -> BatchReport:
    """A worker's share of a metering run (iaas.spending.batch.walk_partition)."""
    from . import services  # the per-server path, for a batch that fails; it does not import this module

    def one_by_one(*, after, size: int, skip: set) -> BatchReport:
        keys = list(
            locks.servers_to_meter(now=now, partition=partition, after=after).values_list("wallet_id", "id")[
                :size
            ]
        )
        return batch.one_by_one(
            keys=keys,
            size=size,
            skip=skip,
            work=lambda server_id: services.server_bill_usage(server_id=server_id, now=now, grace=grace),
            noun="server",
            units=lambda outcome: outcome.hours,
        )

    return batch.walk_partition(
        run_batch=partial(meter_batch, now=now, grace=grace, partition=partition),
        one_by_one=one_by_one,
        partition=partition,
        size=size,
        label="metering",
    )
