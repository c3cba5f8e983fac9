"""Storage's writes: buying a volume, growing it and deleting it. The rest of its life
(metering, an operator's suspend, lift and resume) is the kit's metered-service life,
``iaas.storage.spending.volumes`` (iaas.spending.metered), called as it is.

Lock order (ARCHITECTURE.md): the volume row, then Storage's allowance row, then (inside
Billing's reserve) the wallet row and the hold.
"""

from __future__ import annotations

import datetime as dt
import uuid

from django.utils import timezone

from iaas.common.db import retry_transaction
from iaas.contracts import bus
from iaas.contracts.errors import InvalidState, PlanNotOnSale
from iaas.contracts.events import VolumeResized
from iaas.spending import locks

from .models import Volume, VolumePlan
from .spending import volumes


def size_refusal(plan: VolumePlan, size_gb: int) -> str | None:
    """Why ``size_gb`` is not a size of ``plan`` (None when it is)."""
    if not plan.min_size_gb <= size_gb <= plan.max_size_gb:
        return f"Volumes of plan {plan.id} are {plan.min_size_gb} to {plan.max_size_gb} GB."
    return None


@retry_transaction
def volume_create(*, owner_id: int, wallet_id: uuid.UUID, name: str, plan_id: str, size_gb: int) -> Volume:
    """Buy a volume: its first hour is spent at once out of Storage's allowance, into its
    usage record (settled with the wallet's next settlement run). On InsufficientFunds
    (or any refusal) nothing is created."""
    plan = VolumePlan.objects.filter(pk=plan_id, is_active=True).first()
    if plan is None:
        raise PlanNotOnSale(plan_id)
    if refusal := size_refusal(plan, size_gb):
        raise InvalidState(refusal)
    volume = Volume(owner_id=owner_id, wallet_id=wallet_id, name=name, plan=plan, size_gb=size_gb)
    return volumes.start(volume, now=timezone.now())


@retry_transaction
def volume_resize(
    *, volume_id: uuid.UUID, size_gb: int, owner_id: int | None = None, now: dt.datetime | None = None
) -> Volume:
    """Grow an active volume to ``size_gb``. The bigger size accrues from the resize on:
    the rest of the hour already paid is spent at once for the added GB (a refusal, 402
    or 409, changes nothing), the month's cap grows to a full month at the new size
    (the month costs its GB-hours up to it, the hours the old cap had left free
    included), and the hours that follow accrue at it. The same size again changes
    nothing."""
    now = now or timezone.now()
    volume = locks.service_lock(Volume, volume_id, owner_id=owner_id)
    if volume.status != Volume.Status.ACTIVE:
        # A suspended volume's owed hours are charged when it resumes, at its size then.
        raise InvalidState(f"A {volume.status} volume cannot be resized.")
    if size_gb < volume.size_gb:
        raise InvalidState(f"A volume can only grow: this one is {volume.size_gb} GB.")
    plan = volume.plan  # one read of the price for the hour's rest and the new cap
    if refusal := size_refusal(plan, size_gb):
        raise InvalidState(refusal)
    if size_gb == volume.size_gb:
        return volume
    added, previous = size_gb - volume.size_gb, volume.size_gb
    volume.size_gb = size_gb
    volume.save(update_fields=["size_gb"])
    volumes.forget_rate(volume)
    volumes.grow(
        volume,
        per_hour=added * plan.price_per_gb_month,
        cap=size_gb * plan.price_per_gb_month,
        currency=plan.currency,
        now=now,
    )
    bus.publish(
        VolumeResized(
            volume_id=volume.id, wallet_id=volume.wallet_id, size_gb=size_gb, previous_size_gb=previous
        )
    )
    return volume


def volume_delete(*, volume_id: uuid.UUID, owner_id: int | None = None, reason: str = "customer") -> Volume:
    """Delete a volume. The hour already paid is not refunded; nothing more accrues."""
    return volumes.end(service_id=volume_id, owner_id=owner_id, reason=reason)
