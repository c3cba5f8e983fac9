"""Cloud's writes: buying, metering, suspending, resuming and terminating servers.

Lock order (ARCHITECTURE.md): the server row, then Cloud's allowance row, then (inside
Billing's reserve) the wallet row and the hold.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from functools import partial

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from iaas.common.db import retry_transaction
from iaas.contracts import bus
from iaas.contracts.errors import DomainError, InvalidState, NotFound, ServiceBusy
from iaas.contracts.events import ServerResumed, ServerSuspended, ServerTerminated
from iaas.contracts.types import Money
from iaas.spending import lifecycle, usage
from iaas.spending.models import SuspensionCause

from .locks import server_lock, server_try_lock
from .models import Server, ServerPlan, Usage
from .spending import spender

HOUR = dt.timedelta(hours=1)
BATCH = "bill_usage"  # how the metering run signs what it changes


@retry_transaction
def server_create(*, owner_id: int, wallet_id: uuid.UUID, name: str, plan_id: str) -> Server:
    """Buy a server: its first hour is charged at once out of Cloud's allowance. On
    InsufficientFunds (or any refusal) nothing is created."""
    plan = ServerPlan.objects.filter(pk=plan_id, is_active=True).first()
    if plan is None:
        raise NotFound(f"No such plan: {plan_id}.")
    now = timezone.now()
    server = Server.objects.create(
        owner_id=owner_id, wallet_id=wallet_id, name=name, plan=plan, paid_until=now + HOUR
    )
    spender.spend(
        wallet_id=wallet_id,
        owner_id=owner_id,
        price=Money(plan.price_per_hour, plan.currency),
        description=f"Server {name} ({plan.id}), first hour",
        subject_id=server.id,
        period_start=now,
        period_end=server.paid_until,
        transaction_date=now,
    )
    # The first hour is a one-off charge (recorded above) and the month's first hour of
    # usage, already closed: the cap and I11 count it, settlement does not charge it again.
    first_hour = usage.Accrual(
        server.id,
        usage.month_of(now),
        now,
        server.paid_until,
        1,
        plan.price_per_hour,
        plan.price_per_hour,
        plan.monthly_cap,
    )
    usage.upsert_accruals(
        Usage, [(first_hour, usage.UsageOwner(wallet_id, owner_id, plan.currency))], now=now, closed=True
    )
    return server


@retry_transaction
def server_terminate(
    *, server_id: uuid.UUID, owner_id: int | None = None, reason: str = "customer"
) -> Server:
    """Terminate a server. The hour already paid is not refunded; no further charges."""
    server = server_lock(server_id, owner_id=owner_id)
    if server.status == Server.Status.TERMINATED:
        return server
    _mark_terminated(server, at=timezone.now(), reason=reason)
    return server


def _mark_terminated(server: Server, *, at: dt.datetime, reason: str) -> None:
    """Terminate a locked server and say so (ServerTerminated). What it accrued and was
    not closed yet is closed by the next settlement run (a service's end)."""
    server.status = Server.Status.TERMINATED
    server.terminated_at = at
    server.save(update_fields=["status", "terminated_at"])
    Usage.objects.filter(service_id=server.id, amount__gt=F("closed_amount")).update(close_due_at=at)
    bus.publish(ServerTerminated(server_id=server.id, wallet_id=server.wallet_id, reason=reason))


@retry_transaction
def server_suspend(*, server_id: uuid.UUID, reason: str, actor_id: int | None = None) -> Server:
    """An operator suspends a server (cause ``operator``, with a reason). A server already
    suspended for another cause gains this one; it runs again only when every cause is
    lifted, and nothing terminates it while an operator holds it."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidState("An operator's suspension needs a reason.")
    server = server_lock(server_id)
    if server.status == Server.Status.TERMINATED:
        raise InvalidState("A terminated server cannot be suspended.")
    if server.has_cause(SuspensionCause.OPERATOR):
        raise InvalidState("This server is already suspended by an operator.")
    before = lifecycle.snapshot(server)
    _suspend_for(server, SuspensionCause.OPERATOR, at=timezone.now(), reason=reason)
    lifecycle.record(server, before, action="suspend", actor_id=actor_id, reason=reason)
    return server


def _suspend_for(server: Server, cause: str, *, at: dt.datetime, reason: str = "") -> None:
    """Record ``cause`` on a locked server; an active one stops (ServerSuspended)."""
    server.add_cause(cause, at=at, reason=reason)
    _save_causes(server, stopped_at=at)


def _save_causes(server: Server, *, stopped_at: dt.datetime) -> None:
    """Save a locked server's causes; when it was active and now has one, it stops
    (ServerSuspended)."""
    lifecycle.save_causes(
        server,
        stopped_at=stopped_at,
        suspended=partial(ServerSuspended, server_id=server.id, wallet_id=server.wallet_id),
    )


@retry_transaction
def server_resume(
    *, server_id: uuid.UUID, now: dt.datetime | None = None, actor_id: int | None = None
) -> Server:
    """An operator resumes a server: every cause is lifted and what the server owes is
    charged, exactly as the batch run's resumption does (the hours it ran unpaid before
    it stopped, then the hour starting now unless a paid hour is still running). When
    the wallet refuses, nothing changes and the refusal is raised."""
    server = server_lock(server_id)
    if server.status != Server.Status.SUSPENDED:
        raise InvalidState(f"Only a suspended server can be resumed (this one is {server.status}).")
    before = lifecycle.snapshot(server)
    _resume_paying(server, now=now or timezone.now())
    lifecycle.record(server, before, action="resume", actor_id=actor_id)
    return server


@retry_transaction
def server_lift_operator_hold(
    *, server_id: uuid.UUID, now: dt.datetime | None = None, actor_id: int | None = None
) -> Server:
    """An operator lifts their own hold. When no other cause holds the server resumes,
    charged as ``server_resume`` (a refusal changes nothing); when it is also unpaid or
    its wallet is blocked, it stays suspended for those and the batch runs take over
    (the termination clock runs again for ``unpaid``)."""
    server = server_lock(server_id)
    if not server.has_cause(SuspensionCause.OPERATOR):
        raise InvalidState("This server is not suspended by an operator.")
    before = lifecycle.snapshot(server)
    server.lift_cause(SuspensionCause.OPERATOR)
    if server.suspension_causes:
        server.save(update_fields=Server.CAUSE_UPDATE_FIELDS)
    else:
        _resume_paying(server, now=now or timezone.now())
    lifecycle.record(server, before, action="lift_operator_hold", actor_id=actor_id)
    return server


def _resume_paying(server: Server, *, now: dt.datetime) -> tuple[int, int]:
    """Resume a locked, suspended server, paying what it owes: the hours it ran unpaid
    before it stopped, then (unless a paid hour still runs) the hour starting now. The
    suspended time itself is never charged. Every path that resumes a server comes here,
    so an hour is charged once whoever resumes it. Returns (hours, amount)."""
    ran_until = server.suspended_at or server.paid_until
    hours = _started_hours(server.paid_until, ran_until)
    amount = _accrue(server, start=server.paid_until, hours=hours, now=now)
    paid_until = server.paid_until + hours * HOUR
    if paid_until <= now:  # priced after the owed hours: they count towards the cap
        amount += _accrue(server, start=now, hours=1, now=now)
        paid_until, hours = now + HOUR, hours + 1
    for cause in server.suspension_causes:
        server.lift_cause(cause)
    server.status = Server.Status.ACTIVE
    server.suspended_at = None
    server.paid_until = paid_until
    server.save(update_fields=["status", "suspended_at", "paid_until", *Server.CAUSE_UPDATE_FIELDS])
    bus.publish(ServerResumed(server_id=server.id, wallet_id=server.wallet_id))
    return hours, amount


def server_terminates_at(server: Server) -> dt.datetime | None:
    """When bill_usage terminates this server: the grace period after it became unpaid,
    while that is its only cause; None when no clock runs."""
    if server.status != Server.Status.SUSPENDED:
        return None
    return lifecycle.terminates_at(server, grace=dt.timedelta(hours=settings.IAAS_SERVER_GRACE_HOURS))


def allowance_release(*, wallet_id: uuid.UUID, reason: str, amount: int | None = None):
    """Give Cloud's unused allowance for a wallet back to Billing."""
    return spender.release(wallet_id=wallet_id, reason=reason, amount=amount)


# --- Metering (bill_usage) -------------------------------------------------------------------
#
# A server is paid up to ``paid_until``. A run at ``now`` charges every hour that has
# started since then (a started hour is a whole hour), each hour in the calendar month it
# starts in, at most the plan's ``monthly_cap`` per month and server (the Hetzner model).
# ``paid_until`` moves in the transaction that records the charge, under the server's row
# lock, so an hour is charged once however many runs there are.


@dataclass(frozen=True, slots=True)
class MeteringOutcome:
    server_id: uuid.UUID
    wallet_id: uuid.UUID
    action: str  # see ACTIONS
    hours: int = 0
    amount: int = 0
    currency: str = ""

    ACTIONS = ("charged", "up_to_date", "suspended", "resumed", "still_suspended", "terminated", "busy")


def _started_hours(start: dt.datetime, until: dt.datetime) -> int:
    return usage.started_hours(start, until)


def _accrue(server: Server, *, start: dt.datetime, hours: int, now: dt.datetime) -> int:
    """Spend ``hours`` of a locked server from ``start`` out of Cloud's allowance and add
    them to its usage records (priced under the monthly cap). Returns the amount."""
    plan = server.plan
    return spender.accrue(
        service_id=server.id,
        wallet_id=server.wallet_id,
        owner_id=server.owner_id,
        currency=plan.currency,
        start=start,
        hours=hours,
        price_per_hour=plan.price_per_hour,
        cap=plan.monthly_cap,
        now=now,
    )


def usage_due(server: Server, *, now: dt.datetime) -> list[usage.Accrual]:
    """What a run at ``now`` would accrue for an active server (read only)."""
    start = server.paid_until
    spent = usage.spent_in_months(Usage, [server.id], from_month=usage.month_of(start))
    return usage.price_hours(
        service_id=server.id,
        start=start,
        hours=_started_hours(start, now),
        price_per_hour=server.plan.price_per_hour,
        cap=server.plan.monthly_cap,
        spent=spent.get(server.id, {}),
    )


def server_usage_due(*, server_id: uuid.UUID, now: dt.datetime) -> list[usage.Accrual]:
    """What a run at ``now`` would accrue for an active server (read only, for --dry-run)."""
    server = Server.objects.select_related("plan").get(pk=server_id)
    if server.status != Server.Status.ACTIVE:
        return []
    return usage_due(server, now=now)


@retry_transaction
def _server_charge_due(*, server_id: uuid.UUID, now: dt.datetime) -> MeteringOutcome:
    server = server_try_lock(server_id)
    if server is None:
        return MeteringOutcome(server_id, uuid.UUID(int=0), "busy")
    if server.status != Server.Status.ACTIVE or server.paid_until >= now:
        return MeteringOutcome(server.id, server.wallet_id, "up_to_date")
    hours = _started_hours(server.paid_until, now)
    amount = _accrue(server, start=server.paid_until, hours=hours, now=now)
    server.paid_until += hours * HOUR
    server.save(update_fields=["paid_until"])
    return MeteringOutcome(server.id, server.wallet_id, "charged", hours, amount, server.plan.currency)


@retry_transaction
def _server_suspend_refused(
    *, server_id: uuid.UUID, now: dt.datetime, refusal: DomainError
) -> MeteringOutcome:
    """The charge was refused and rolled back: suspend for the refusal's cause (unpaid,
    wallet_blocked, or an operator hold for what no top-up can cure), unless another
    run paid it since."""
    server = server_lock(server_id)
    if server.status != Server.Status.ACTIVE or server.paid_until >= now:
        return MeteringOutcome(server.id, server.wallet_id, "up_to_date")
    before = lifecycle.snapshot(server)
    lifecycle.record_refusal(server, refusal, at=now)
    _save_causes(server, stopped_at=now)
    lifecycle.record(server, before, action="suspend", actor_label=BATCH, reason=refusal.code)
    return MeteringOutcome(server.id, server.wallet_id, "suspended")


def _batch_may_resume(server: Server) -> bool:
    """The batch lifts only its own causes: never an operator's hold."""
    return server.status == Server.Status.SUSPENDED and not server.has_cause(SuspensionCause.OPERATOR)


@retry_transaction
def _server_resume_paid(*, server_id: uuid.UUID, now: dt.datetime) -> MeteringOutcome:
    """Pay what a server suspended for unpaid or a blocked wallet owes, and resume it."""
    server = server_try_lock(server_id)
    if server is None:
        return MeteringOutcome(server_id, uuid.UUID(int=0), "busy")
    if not _batch_may_resume(server):
        return MeteringOutcome(server.id, server.wallet_id, "up_to_date")
    before = lifecycle.snapshot(server)
    hours, amount = _resume_paying(server, now=now)
    lifecycle.record(server, before, action="resume", actor_label=BATCH)
    return MeteringOutcome(server.id, server.wallet_id, "resumed", hours, amount, server.plan.currency)


@retry_transaction
def _server_stays_suspended(
    *, server_id: uuid.UUID, now: dt.datetime, grace: dt.timedelta, refusal: DomainError
) -> MeteringOutcome:
    """The resumption was refused: record why, and terminate a server unpaid (alone)
    for longer than ``grace``."""
    server = server_lock(server_id)
    if not _batch_may_resume(server):
        return MeteringOutcome(server.id, server.wallet_id, "up_to_date")
    before = lifecycle.snapshot(server)
    lifecycle.record_refusal(server, refusal, at=now)
    server.save(update_fields=Server.CAUSE_UPDATE_FIELDS)
    if lifecycle.is_overdue(server, now=now, grace=grace):
        _mark_terminated(server, at=now, reason="unpaid")
        lifecycle.record(server, before, action="terminate", actor_label=BATCH, reason="unpaid")
        return MeteringOutcome(server.id, server.wallet_id, "terminated")
    lifecycle.record(server, before, action="change_causes", actor_label=BATCH, reason=refusal.code)
    return MeteringOutcome(server.id, server.wallet_id, "still_suspended")


def server_bill_usage(*, server_id: uuid.UUID, now: dt.datetime, grace: dt.timedelta) -> MeteringOutcome:
    """Meter one server at ``now``, one transaction at a time (never two wallets in one):

    - active: charge the started hours since ``paid_until``; when the wallet refuses,
      suspend it for the refusal's cause (ServerSuspended) in a new transaction;
    - suspended for unpaid or a blocked wallet (never an operator's hold): when the
      wallet can pay what it owes, resume it (ServerResumed); otherwise terminate it
      once unpaid alone for longer than ``grace`` (ServerTerminated);
    - terminated: nothing, ever.

    A server another transaction holds is skipped ("busy"): the next run meters it.
    """
    status = Server.objects.filter(pk=server_id).values_list("status", flat=True).first()
    if status == Server.Status.ACTIVE:
        try:
            return _server_charge_due(server_id=server_id, now=now)
        except ServiceBusy:
            raise  # not a refusal: nothing was decided, the next run tries again
        except DomainError as refusal:
            return _server_suspend_refused(server_id=server_id, now=now, refusal=refusal)
    if status == Server.Status.SUSPENDED:
        try:
            return _server_resume_paid(server_id=server_id, now=now)
        except ServiceBusy:
            raise
        except DomainError as refusal:
            return _server_stays_suspended(server_id=server_id, now=now, grace=grace, refusal=refusal)
    return MeteringOutcome(server_id, uuid.UUID(int=0), "up_to_date")


def allowance_release_after_batch(*, wallet_ids) -> int:
    """What a metering or renewal run that reserved ahead left on the wallets it charged,
    given back when it finishes."""
    return spender.release_after_batch(wallet_ids=wallet_ids)
