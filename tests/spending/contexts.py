"""The three selling contexts side by side, for the tests of what the kit does for every
one of them (iaas.spending): how a service is bought, refused, run one at a time, held
by an operator and seen through the API, and what its events are called."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO

import time_machine
from django.core.management import call_command
from rest_framework.test import APIClient

from iaas.billing import services as billing_services
from iaas.cloud import services as cloud
from iaas.cloud.spending import servers
from iaas.contracts import bus
from iaas.contracts.events import (
    ServerResumed,
    ServerSuspended,
    ServerTerminated,
    SubscriptionCancelled,
    SubscriptionResumed,
    SubscriptionSuspended,
    VolumeDeleted,
    VolumeResumed,
    VolumeSuspended,
)
from iaas.hosting import services as hosting
from iaas.hosting.spending import subscriptions
from iaas.spending.sold import SoldServices
from iaas.storage import services as storage
from iaas.storage.spending import volumes
from tests.batch_runs import at
from tests.factories import api_key_for


@dataclass(frozen=True)
class Context:
    name: str
    sold: SoldServices
    kind: str
    path: str  # the API detail, "{}" for the id
    price: int  # what the purchase costs: a wallet holding this much cannot pay more
    bought: dt.datetime
    refused: dt.datetime  # the first batch run after ``bought`` that asks for money
    batch_command: str
    ends_field: str  # the API field saying when it ends unpaid
    events: tuple[type, type, type]  # suspended, resumed, ended
    create: Callable  # (wallet) -> service
    one: Callable  # (service, now): the per-item path the batch falls back to
    hold: Callable  # (service, reason): an operator's suspension
    lift: Callable  # (service): the operator lifts their hold

    def buy(self, wallet):
        with time_machine.travel(self.bought, tick=False):
            service = self.create(wallet)
            bus.deliver_pending()
        return service

    def run_batch(self, moment: dt.datetime) -> None:
        """The context's batch run at ``moment`` (the clock stopped), its events delivered."""
        with time_machine.travel(moment, tick=False):
            call_command(self.batch_command, stdout=StringIO(), stderr=StringIO())
            call_command("settle_usage", stdout=StringIO())
            bus.deliver_pending()

    def run_one(self, service, moment: dt.datetime) -> None:
        """The per-item path at ``moment`` (what a failed batch falls back to)."""
        with time_machine.travel(moment, tick=False):
            self.one(service, moment)
            bus.deliver_pending()

    def operate(self, moment: dt.datetime, action: Callable, *args) -> None:
        """An operator's action at ``moment``."""
        with time_machine.travel(moment, tick=False):
            action(*args)
            bus.deliver_pending()

    def detail(self, service, moment: dt.datetime, *, method: str = "get") -> dict:
        """The service as its owner's API detail shows it at ``moment``."""
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {api_key_for(service.owner)}")
        with time_machine.travel(moment, tick=False):
            response = getattr(client, method)(self.path.format(service.id))
        assert response.status_code == 200, response.content
        return response.json()

    def ends_at(self, suspended_at: dt.datetime) -> dt.datetime:
        return suspended_at + self.sold.grace()


CLOUD = Context(
    name="cloud",
    sold=servers,
    kind="server",
    path="/api/v1/cloud/servers/{}/",
    price=4,
    bought=at(2026, 5, 10, 10),
    refused=at(2026, 5, 10, 11, 5),
    batch_command="bill_usage",
    ends_field="terminates_at",
    events=(ServerSuspended, ServerResumed, ServerTerminated),
    create=lambda wallet: cloud.server_create(
        owner_id=wallet.owner_id, wallet_id=wallet.id, name="web1", plan_id="s-2vcpu-4gb"
    ),
    one=lambda service, now: servers.bill_one(service_id=service.id, now=now, grace=servers.grace()),
    hold=lambda service, reason: servers.suspend(service_id=service.id, reason=reason),
    lift=lambda service: servers.lift_operator_hold(service_id=service.id),
)
HOSTING = Context(
    name="hosting",
    sold=subscriptions,
    kind="subscription",
    path="/api/v1/hosting/subscriptions/{}/",
    price=399,
    bought=at(2026, 5, 10, 9),
    refused=at(2026, 6, 10, 10),
    batch_command="renew_subscriptions",
    ends_field="cancels_at",
    events=(SubscriptionSuspended, SubscriptionResumed, SubscriptionCancelled),
    create=lambda wallet: hosting.subscription_create(
        owner_id=wallet.owner_id,
        wallet_id=wallet.id,
        domain=f"{wallet.id.hex[:12]}.example",
        plan_id="web-starter",
    ),
    one=lambda service, now: hosting.subscription_renew(subscription_id=service.id, now=now),
    hold=lambda service, reason: hosting.subscription_suspend(subscription_id=service.id, reason=reason),
    lift=lambda service: hosting.subscription_lift_operator_hold(subscription_id=service.id),
)
STORAGE = Context(
    name="storage",
    sold=volumes,
    kind="volume",
    path="/api/v1/storage/volumes/{}/",
    price=14,  # 1000 GB of ssd for an hour
    bought=at(2026, 5, 10, 10),
    refused=at(2026, 5, 10, 11, 5),
    batch_command="bill_usage",
    ends_field="terminates_at",
    events=(VolumeSuspended, VolumeResumed, VolumeDeleted),
    create=lambda wallet: storage.volume_create(
        owner_id=wallet.owner_id, wallet_id=wallet.id, name="data-1", plan_id="ssd", size_gb=1000
    ),
    one=lambda service, now: volumes.bill_one(service_id=service.id, now=now, grace=volumes.grace()),
    hold=lambda service, reason: volumes.suspend(service_id=service.id, reason=reason),
    lift=lambda service: volumes.lift_operator_hold(service_id=service.id),
)
CONTEXTS = [CLOUD, HOSTING, STORAGE]


def top_up(wallet, amount: int = 10_000) -> None:
    billing_services.top_up_create(wallet_id=wallet.id, owner_id=wallet.owner_id, amount=amount)


def empty(wallet, operator) -> None:
    """An operator takes what the wallet has available: it cannot pay again."""
    wallet.refresh_from_db()
    billing_services.wallet_adjust(
        wallet_id=wallet.id, amount=-wallet.available, reason="test: empty it", operator_id=operator.pk
    )


def moment(text: str | None) -> dt.datetime | None:
    """A moment the API printed."""
    return None if text is None else dt.datetime.fromisoformat(text)
