"""Cloud's writes: buying, suspending, resuming and terminating servers.

Lock order (ARCHITECTURE.md): the server row, then Cloud's allowance row, then (inside
Billing's reserve) the wallet row and the hold.
"""

from __future__ import annotations

import datetime as dt
import uuid

from django.db import transaction
from django.utils import timezone

from iaas.common.db import retry_transaction
from iaas.contracts import bus
from iaas.contracts.errors import InvalidState, NotFound
from iaas.contracts.events import ServerResumed, ServerSuspended, ServerTerminated
from iaas.contracts.types import Money

from .models import Server, ServerPlan
from .spending import spender

HOUR = dt.timedelta(hours=1)


def server_lock(server_id: uuid.UUID, *, owner_id: int | None = None) -> Server:
    rows = Server.objects.select_for_update(no_key=True)
    if owner_id is not None:
        rows = rows.filter(owner_id=owner_id)
    try:
        return rows.get(pk=server_id)
    except Server.DoesNotExist:
        raise NotFound("No such server.") from None


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
    return server


@retry_transaction
def server_terminate(
    *, server_id: uuid.UUID, owner_id: int | None = None, reason: str = "customer"
) -> Server:
    """Terminate a server. The hour already paid is not refunded; no further charges."""
    server = server_lock(server_id, owner_id=owner_id)
    if server.status == Server.Status.TERMINATED:
        return server
    server.status = Server.Status.TERMINATED
    server.terminated_at = timezone.now()
    server.save(update_fields=["status", "terminated_at"])
    bus.publish(ServerTerminated(server_id=server.id, wallet_id=server.wallet_id, reason=reason))
    return server


@retry_transaction
def server_suspend(*, server_id: uuid.UUID, reason: str) -> Server:
    server = server_lock(server_id)
    if server.status != Server.Status.ACTIVE:
        raise InvalidState(f"Only an active server can be suspended (this one is {server.status}).")
    server.status = Server.Status.SUSPENDED
    server.suspended_at = timezone.now()
    server.save(update_fields=["status", "suspended_at"])
    bus.publish(ServerSuspended(server_id=server.id, wallet_id=server.wallet_id, reason=reason))
    return server


@retry_transaction
def server_resume(*, server_id: uuid.UUID) -> Server:
    """Resume a suspended server. Metering picks up from now: the suspended time is not
    charged, so ``paid_until`` moves to now when it lies in the past."""
    server = server_lock(server_id)
    if server.status != Server.Status.SUSPENDED:
        raise InvalidState(f"Only a suspended server can be resumed (this one is {server.status}).")
    now = timezone.now()
    server.status = Server.Status.ACTIVE
    server.suspended_at = None
    server.paid_until = max(server.paid_until, now)
    server.save(update_fields=["status", "suspended_at", "paid_until"])
    bus.publish(ServerResumed(server_id=server.id, wallet_id=server.wallet_id))
    return server


def allowance_release(*, wallet_id: uuid.UUID, reason: str, amount: int | None = None):
    """Give Cloud's unused allowance for a wallet back to Billing."""
    with transaction.atomic():
        return spender.release(wallet_id=wallet_id, reason=reason, amount=amount)
