"""Storage's part in operations' demo commands (seed_demo, demo_race): purchases made
through Storage's own services, as a customer's request would make them."""

from __future__ import annotations

import uuid

from iaas.spending.usage import rounded

from .models import Usage, Volume, VolumePlan
from .services import volume_create

RACE_PLAN, RACE_SIZE = "ssd", 2000  # a 2 TB volume
SEED_VOLUME = ("demo-data-1", "ssd", 50)


def race_price() -> int:
    """What the demo race's purchase costs at once (EUR minor units): the first hour."""
    plan = VolumePlan.objects.get(pk=RACE_PLAN)
    return rounded(RACE_SIZE * plan.price_per_gb_month, Usage.LIST_DIVISOR)


def race_purchase(*, owner_id: int, wallet_id: uuid.UUID) -> None:
    volume_create(owner_id=owner_id, wallet_id=wallet_id, name="race", plan_id=RACE_PLAN, size_gb=RACE_SIZE)


def seed_purchase(*, owner_id: int, wallet_id: uuid.UUID) -> None:
    """The demo customer's volume, once."""
    if not Volume.objects.filter(owner_id=owner_id).exists():
        name, plan, size = SEED_VOLUME
        volume_create(owner_id=owner_id, wallet_id=wallet_id, name=name, plan_id=plan, size_gb=size)
