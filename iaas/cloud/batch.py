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
from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import F

from iaas.audit.services import Change, changed_fields, object_type, record_changes
from iaas.common import sql
from iaas.common.cli import run_each
from iaas.common.faults import pause_point
from iaas.contracts import bus
from iaas.contracts.errors import DomainError
from iaas.contracts.events import Event, ServerResumed, ServerSuspended, ServerTerminated
from iaas.spending import batch, lifecycle, usage
from iaas.spending.models import SuspensionCause

from . import locks
from .models import Server, Usage
from .spending import spender

logger = logging.getLogger(__name__)

HOUR = usage.HOUR
BATCH = "bill_usage"  # how the metering run signs what it changes
SERVER_COLUMNS = (
    "id",
    "status",
    "paid_until",
    "suspended_at",
    "terminated_at",
    "unpaid_since",
    "wallet_blocked_since",
    "operator_hold_since",
    "operator_reason",
)


@dataclass(slots=True)
class Step:
    """What the batch means to do for one locked server."""

    server: Server
    accruals: list[usage.Accrual]
    paid_until: dt.datetime  # once paid
    resumes: bool  # a suspended server that resumes once paid

    @property
    def amount(self) -> int:
        return sum(a.amount for a in self.accruals)

    @property
    def hours(self) -> int:
        return sum(a.hours for a in self.accruals)


@dataclass(slots=True)
class BatchReport:
    servers: int = 0
    hours: int = 0
    amounts: Counter = field(default_factory=Counter)  # currency -> minor units
    actions: Counter = field(default_factory=Counter)  # MeteringOutcome.ACTIONS
    granted: int = 0
    charged_wallets: set = field(default_factory=set)
    deferred_wallets: set = field(default_factory=set)
    tried_suspended: set = field(default_factory=set)
    failed_ids: set = field(default_factory=set)  # servers whose per-server retry failed
    last: tuple[uuid.UUID, uuid.UUID] | None = None
    exhausted: bool = False  # the partition has no due server past ``last``
    failures: list = field(default_factory=list)  # iaas.common.cli.ItemFailure


def _plan_steps(servers: list[Server], *, now: dt.datetime) -> list[Step]:
    """Each server's accruals (priced under the cap, counting what its usage records of
    the months concerned hold: one read for the batch) and its state once paid."""
    if not servers:
        return []
    first_month = min(usage.month_of(s.paid_until) for s in servers)
    spent = usage.spent_in_months(Usage, [s.id for s in servers], from_month=first_month)
    steps = []
    for server in servers:
        months = spent.setdefault(server.id, {})
        if server.status == Server.Status.ACTIVE:
            hours = usage.started_hours(server.paid_until, now)
            accruals = _price(server, server.paid_until, hours, months)
            steps.append(Step(server, accruals, server.paid_until + hours * HOUR, resumes=False))
            continue
        # Suspended for causes the batch lifts: the hours it ran unpaid before it stopped,
        # then the hour starting now unless a paid hour still runs (as _resume_paying).
        ran_until = server.suspended_at or server.paid_until
        owed = usage.started_hours(server.paid_until, ran_until)
        accruals = _price(server, server.paid_until, owed, months)
        paid_until = server.paid_until + owed * HOUR
        if paid_until <= now:
            accruals += _price(server, now, 1, months)
            paid_until = now + HOUR
        steps.append(Step(server, accruals, paid_until, resumes=True))
    return steps


def _price(server: Server, start: dt.datetime, hours: int, months: dict) -> list[usage.Accrual]:
    """Price hours and count them in ``months`` (so a later step of the same server sees
    them against the cap)."""
    plan = server.plan
    accruals = usage.price_hours(
        service_id=server.id,
        start=start,
        hours=hours,
        price_per_hour=plan.price_per_hour,
        cap=plan.monthly_cap,
        spent=months,
    )
    for accrual in accruals:
        before = months.get(accrual.month, usage.MonthSpent())
        months[accrual.month] = usage.MonthSpent(before.amount + accrual.amount, before.refunded)
    return accruals


def _bills(steps: list[Step]) -> dict[uuid.UUID, batch.WalletBill]:
    bills: dict[uuid.UUID, batch.WalletBill] = {}
    for step in steps:
        server = step.server
        bill = bills.setdefault(
            server.wallet_id, batch.WalletBill(server.wallet_id, server.owner_id, server.plan.currency)
        )
        if bill.owner_id != server.owner_id or bill.currency != server.plan.currency:
            # Servers of one wallet disagree with each other: the allowance check refuses
            # whichever differs from the wallet; keep the first and let the rest fail it.
            logger.warning("servers of wallet %s differ in owner or currency", server.wallet_id)
        bill.total += step.amount
    return bills


def meter_batch(
    *,
    now: dt.datetime,
    grace: dt.timedelta,
    partition: batch.Partition,
    after: tuple[uuid.UUID, uuid.UUID] | None,
    size: int,
    skip: set | frozenset = frozenset(),
) -> BatchReport:
    """One batch, one transaction: see the module's docstring. ``skip``: suspended
    servers this run already tried (the last pass does not try them twice)."""
    report = BatchReport()
    with transaction.atomic():
        batch.start_batch_transaction()
        logger.info("metering batch started: partition %s after %s", partition, after)
        servers = locks.servers_to_meter_try_lock(now=now, partition=partition, after=after, limit=size + 1)
        report.exhausted = len(servers) <= size
        servers = _whole_wallets(servers, size)
        if servers:
            report.last = (servers[-1].wallet_id, servers[-1].id)
        servers = [s for s in servers if s.id not in skip]
        steps = _plan_steps(servers, now=now)
        bills = _bills(steps)
        allowances, unknown = spender.allowances_try_lock({w: b.owner_id for w, b in bills.items()})
        payment = batch.pay_wallets(
            spender.allowance_model,
            spender.context,
            bills,
            allowances,
            refused=unknown,
            chunk=spender.reserve_ahead(),
        )
        _apply(steps, payment, now=now, grace=grace, report=report)
        pause_point("metering_batch")
    logger.info("metering batch committed: partition %s, %d server(s)", partition, report.servers)
    return report


def _whole_wallets(servers: list[Server], size: int) -> list[Server]:
    """A batch claims whole wallets: when the query returned more than ``size`` servers,
    the last wallet may continue past the limit, so it is left to the next batch (unless
    it is the batch's only wallet: a wallet with more servers than a batch is metered in
    several, one after the other, by the same worker)."""
    if len(servers) <= size:
        return servers
    last_wallet = servers[size].wallet_id
    whole = [s for s in servers[:size] if s.wallet_id != last_wallet]
    return whole or servers[:size]


def _apply(
    steps: list[Step],
    payment: batch.BatchPayment,
    *,
    now: dt.datetime,
    grace: dt.timedelta,
    report: BatchReport,
) -> None:
    """Write what the wallets' payment decided: usage, servers, events, history."""
    accruals, changed, events, history, ended = [], [], [], [], []
    for step in steps:
        server = step.server
        wallet_id = server.wallet_id
        report.servers += 1
        if server.status == Server.Status.SUSPENDED:
            report.tried_suspended.add(server.id)
        if wallet_id in payment.deferred:
            report.actions["busy"] += 1
            report.deferred_wallets.add(wallet_id)
            continue
        before = lifecycle.snapshot(server)
        if wallet_id in payment.paid:
            who = usage.UsageOwner(wallet_id, server.owner_id, server.plan.currency)
            accruals.extend((a, who) for a in step.accruals)
            report.hours += step.hours
            report.amounts[server.plan.currency] += step.amount
            report.charged_wallets.add(wallet_id)
            server.paid_until = step.paid_until
            if step.resumes:
                _resume(server)
                events.append(ServerResumed(server_id=server.id, wallet_id=wallet_id))
                history.append(_history(server, before, "resume"))
                report.actions["resumed"] += 1
            else:
                report.actions["charged"] += 1
            changed.append(server)
            continue
        refusal = payment.refused[wallet_id]
        action, event = _refused(server, refusal, now=now, grace=grace)
        report.actions[action] += 1
        if event is not None:
            events.append(event)
        if action == "terminated":
            ended.append(server.id)
        if lifecycle.snapshot(server) != before:
            changed.append(server)
            history.append(
                _history(
                    server,
                    before,
                    {"suspended": "suspend", "terminated": "terminate"}.get(action, "change_causes"),
                    reason=refusal.code,
                )
            )
    report.granted = payment.granted
    usage.upsert_accruals(Usage, accruals, now=now)
    _save_servers(changed)
    _close_usage_of_ended(ended, now=now)
    bus.publish(*events)
    record_changes(history)


def _resume(server: Server) -> None:
    for cause in server.suspension_causes:
        server.lift_cause(cause)
    server.status = Server.Status.ACTIVE
    server.suspended_at = None


def _refused(
    server: Server, refusal: DomainError, *, now: dt.datetime, grace: dt.timedelta
) -> tuple[str, Event | None]:
    """Record why the wallet refused on a server: an active one stops (its cause), a
    suspended one keeps or changes its cause, and ends once unpaid alone past grace."""
    was_active = server.status == Server.Status.ACTIVE
    lifecycle.record_refusal(server, refusal, at=now)
    if was_active:
        server.status = Server.Status.SUSPENDED
        server.suspended_at = now
        cause = server.suspension_causes[0]
        reason = server.operator_reason if cause == SuspensionCause.OPERATOR else cause
        return "suspended", ServerSuspended(
            server_id=server.id, wallet_id=server.wallet_id, reason=reason, cause=cause
        )
    if lifecycle.is_overdue(server, now=now, grace=grace):
        server.status = Server.Status.TERMINATED
        server.terminated_at = now
        return "terminated", ServerTerminated(
            server_id=server.id, wallet_id=server.wallet_id, reason="unpaid"
        )
    return "still_suspended", None


def _history(server: Server, before: dict, action: str, *, reason: str = "") -> Change:
    old, new = changed_fields(before, lifecycle.snapshot(server))
    return Change(
        obj_type=object_type(server),
        obj_id=server.pk,
        action=action,
        before=old,
        after=new,
        actor_label=BATCH,
        reason=reason,
    )


def _save_servers(servers: list[Server]) -> None:
    """Every changed server's new state: one UPDATE."""
    field_ = Server._meta.get_field
    relation = sql.rows(
        "changed",
        [(name, field_(name)) for name in SERVER_COLUMNS],
        [tuple(getattr(server, name) for name in SERVER_COLUMNS) for server in servers],
    )
    table = sql.table(Server)
    assignments = ", ".join(f"{name} = changed.{name}" for name in SERVER_COLUMNS[1:])
    sql.execute(f"UPDATE {table} SET {assignments} FROM changed WHERE {table}.id = changed.id", relation)  # noqa: S608


def _close_usage_of_ended(server_ids: list[uuid.UUID], *, now: dt.datetime) -> None:
    """A service that ends has its open usage closed by the next settlement run."""
    if server_ids:
        Usage.objects.filter(service_id__in=server_ids, amount__gt=F("closed_amount")).update(
            close_due_at=now
        )


def meter_partition(
    *, now: dt.datetime, grace: dt.timedelta, partition: batch.Partition, size: int | None = None
) -> BatchReport:
    """A worker's share of a run: its partition walked batch by batch with a keyset, then
    once more from the start for what was locked elsewhere the first time (deferred
    wallets, servers skipped by SKIP LOCKED, which no batch can see). Only what is still
    due comes back the second time; suspended servers are tried once per run."""
    size = size or settings.IAAS_BATCH_SIZE
    total = BatchReport()
    batches = 0
    for walk in range(2):  # the walk, then the last pass
        after = None
        if walk:  # what was busy the first time is counted by the last pass only
            total.servers -= total.actions["busy"]
            total.actions["busy"] = 0
            total.deferred_wallets = set()
        while True:
            try:
                report = meter_batch(
                    now=now,
                    grace=grace,
                    partition=partition,
                    after=after,
                    size=size,
                    skip=total.tried_suspended | total.failed_ids,
                )
            except Exception:  # a bad row, a bug: the batch rolled back whole
                logger.exception(
                    "metering batch after %s in partition %s failed; one server at a time", after, partition
                )
                report = _meter_one_by_one(
                    now=now, grace=grace, partition=partition, after=after, size=size, skip=total.failed_ids
                )
            batches += 1
            _add(total, report)
            if report.exhausted or report.last is None:
                break
            after = report.last
    total.actions["batches"] = batches
    return total


def _meter_one_by_one(
    *, now: dt.datetime, grace: dt.timedelta, partition: batch.Partition, after, size: int, skip: set
) -> BatchReport:
    """The servers of a batch that failed, through the per-server path one at a time, so
    one server's failure stops no other (each is reported)."""
    from . import services  # the per-server path; it does not import this module

    servers = list(
        locks.servers_to_meter(now=now, partition=partition, after=after).values_list("wallet_id", "id")[
            :size
        ]
    )
    outcomes, failures = run_each(
        [server_id for _, server_id in servers if server_id not in skip],
        lambda server_id: services.server_bill_usage(server_id=server_id, now=now, grace=grace),
        description="metering servers one by one",
        identify=lambda server_id: (f"server {server_id}", {"server_id": str(server_id)}),
        logger=logger,
    )
    report = BatchReport(
        last=servers[-1] if servers else None, exhausted=len(servers) < size, failures=failures
    )
    for outcome in outcomes:
        report.servers += 1
        report.actions[outcome.action] += 1
        report.hours += outcome.hours
        if outcome.amount:
            report.amounts[outcome.currency] += outcome.amount
            report.charged_wallets.add(outcome.wallet_id)
    report.servers += len(failures)
    report.failed_ids = {uuid.UUID(failure.facts["server_id"]) for failure in failures}
    return report


def _add(total: BatchReport, report: BatchReport) -> None:
    total.failures += report.failures
    total.failed_ids |= report.failed_ids
    total.servers += report.servers
    total.hours += report.hours
    total.amounts.update(report.amounts)
    total.actions.update(report.actions)
    total.granted += report.granted
    total.charged_wallets |= report.charged_wallets
    total.deferred_wallets |= report.deferred_wallets
    total.tried_suspended |= report.tried_suspended
