"""Cloud's part in operations' demo commands (seed_demo, demo_race): purchases made
through Cloud's own services, as a customer's request would make them."""

from __future__ import annotations

import uuid

from .models import Server, ServerPlan
from .services import server_create

RACE_PLAN = "s-8vcpu-16gb"
SEED_SERVER = ("demo-web-1", "s-1vcpu-2gb")


def race_price() -> int:
    """What the demo race's purchase costs at once (EUR minor units): the first hour."""
    return ServerPlan.objects.get(pk=RACE_PLAN).price_per_hour


def race_purchase(*, owner_id: int, wallet_id: uuid.UUID) -> None:
    server_create(owner_id=owner_id, wallet_id=wallet_id, name="race", plan_id=RACE_PLAN)


def seed_purchase(*, owner_id: int, wallet_id: uuid.UUID) -> None:
    """The demo customer's server, once."""
    if not Server.objects.filter(owner_id=owner_id).exists():
        name, plan = SEED_SERVER
        server_create(owner_id=owner_id, wallet_id=wallet_id, name=name, plan_id=plan)
