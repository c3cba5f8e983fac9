"""Hosting's part in operations' demo commands (seed_demo, demo_race): purchases made
through Hosting's own services, as a customer's request would make them."""

from __future__ import annotations

import uuid

from .models import HostingPlan, Subscription
from .services import subscription_create

RACE_PLAN = "web-starter"
SEED_SUBSCRIPTION = ("demo-shop.example.com", "web-starter")


def race_price() -> int:
    """What the demo race's purchase costs at once (EUR minor units): the first month."""
    return HostingPlan.objects.get(pk=RACE_PLAN).price_per_month


def race_purchase(*, owner_id: int, wallet_id: uuid.UUID) -> None:
    subscription_create(
        owner_id=owner_id,
        wallet_id=wallet_id,
        domain=f"race-{uuid.uuid4().hex[:12]}.example",
        plan_id=RACE_PLAN,
    )


def seed_purchase(*, owner_id: int, wallet_id: uuid.UUID) -> None:
    """The demo customer's hosting subscription, once."""
    if not Subscription.objects.filter(owner_id=owner_id).exists():
        domain, plan = SEED_SUBSCRIPTION
        subscription_create(owner_id=owner_id, wallet_id=wallet_id, domain=domain, plan_id=plan)
