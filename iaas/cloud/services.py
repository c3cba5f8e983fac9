"""Cloud's writes: buying a server; its life (metering, suspending, resuming,
terminating) is the kit's metered-service life (iaas.spending.metered) for Server, under
Cloud's own names.

Lock order (ARCHITECTURE.md): the server row, then Cloud's allowance row, then (inside
Billing's reserve) the wallet row and the hold.
"""

from __future__ import annotations

import uuid

from django.utils import timezone

from iaas.common.db import retry_transaction
from iaas.contracts.types import Money
from iaas.spending import catalog, usage
from iaas.spending.metered import MeteringOutcome

from .models import Server, ServerPlan, Usage
from .spending import servers, spender

HOUR = usage.HOUR


@retry_transaction
def server_create(*, owner_id: int, wallet_id: uuid.UUID, name: str, plan_id: str) -> Server:
    """Buy a server: its first hour is charged at once out of Cloud's allowance. On
    InsufficientFunds (or any refusal) nothing is created. With a reservation, six
    statements: the server inserted from its plan, the allowance locked, the wallet's
    conditional reserve, the hold with the reservation and its event, the allowance
    saved, the charge with its event and the month's usage record; inside the
    allowance, three."""
    now = timezone.now()
    server = Server(owner_id=owner_id, wallet_id=wallet_id, name=name, plan_id=plan_id, paid_until=now + HOUR)
    plan = catalog.insert_from_plan(
        server, plan_model=ServerPlan, plan_id=plan_id, terms=("price_per_hour", "monthly_cap", "currency")
    )
    price = plan["price_per_hour"]
    # The first hour is a one-off charge and the month's first hour of usage, already
    # closed: the cap and I11 count it, settlement does not charge it again.
    first_hour = usage.Accrual(
        server.id, usage.month_of(now), now, server.paid_until, 1, price, price, plan["monthly_cap"], price
    )
    owner = usage.UsageOwner(wallet_id, owner_id, plan["currency"])
    spender.spend(
        wallet_id=wallet_id,
        owner_id=owner_id,
        price=Money(price, plan["currency"]),
        description=f"Server {name} ({plan_id}), first hour",
        subject_id=server.id,
        period_start=now,
        period_end=server.paid_until,
        transaction_date=now,
        together=[usage.upsert_write(Usage, first_hour, owner, now=now, closed=True)],
    )
    server.usage_hours, server.usage_amount = 1, price  # the month's usage so far, as the API shows it
    return server


def server_terminate(
    *, server_id: uuid.UUID, owner_id: int | None = None, reason: str = "customer"
) -> Server:
    """Terminate a server. The hour already paid is not refunded; no further charges."""
    return servers.end(service_id=server_id, owner_id=owner_id, reason=reason)


def server_suspend(*, server_id: uuid.UUID, reason: str, actor_id: int | None = None) -> Server:
    """An operator suspends a server (cause ``operator``, with a reason)."""
    return servers.suspend(service_id=server_id, reason=reason, actor_id=actor_id)


def server_resume(*, server_id: uuid.UUID, now=None, actor_id: int | None = None) -> Server:
    """An operator resumes a server, charging what it owes (MeteredServices.resume)."""
    return servers.resume(service_id=server_id, now=now, actor_id=actor_id)


def server_lift_operator_hold(*, server_id: uuid.UUID, now=None, actor_id: int | None = None) -> Server:
    """An operator lifts their own hold (MeteredServices.lift_operator_hold)."""
    return servers.lift_operator_hold(service_id=server_id, now=now, actor_id=actor_id)


def server_bill_usage(*, server_id: uuid.UUID, now, grace) -> MeteringOutcome:
    """Meter one server at ``now`` (MeteredServices.bill_one)."""
    return servers.bill_one(service_id=server_id, now=now, grace=grace)


def server_usage_due(*, server_id: uuid.UUID, now) -> list[usage.Accrual]:
    """What a run at ``now`` would accrue for an active server (read only)."""
    server = Server.objects.get(pk=server_id)
    return servers.usage_due(server, now=now) if server.status == Server.Status.ACTIVE else []


server_terminates_at = servers.terminates_at


def allowance_release(*, wallet_id: uuid.UUID, reason: str, amount: int | None = None):
    """Give Cloud's unused allowance for a wallet back to Billing."""
    return spender.release(wallet_id=wallet_id, reason=reason, amount=amount)


def allowance_release_after_batch(*, wallet_ids) -> int:
    """What a metering run that reserved ahead left on the wallets it charged, given
    back when it finishes."""
    return spender.release_after_batch(wallet_ids=wallet_ids)
