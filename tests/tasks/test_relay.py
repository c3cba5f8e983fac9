"""The outbox relay, end to end on the real broker and a real worker: a relayed
subscription's rows are published (each confirmed), marked delivered, and applied once by
the worker under an inbox record, however many times the message arrives; the rows of the
subscriptions that share the money transaction never leave the database. Without a broker
the delivery worker applies the same subscription in-process, once."""

from __future__ import annotations

import pytest

from iaas.billing import services as billing
from iaas.common import request_ids
from iaas.contracts import bus
from iaas.contracts.models import InboxRecord, OutboxMessage
from iaas.notifications import webhooks
from iaas.notifications.models import WebhookDelivery
from iaas.operations import relay
from iaas.operations.models import UsedOperationToken
from tests.factories import UserFactory, funded_wallet

from . import relay_probe
from .conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def probe():
    with relay_probe.registered():
        yield


def top_up(wallet, amount: int = 500) -> None:
    billing.top_up_create(wallet_id=wallet.id, owner_id=wallet.owner_id, amount=amount)


def applied() -> int:
    return UsedOperationToken.objects.filter(target=relay_probe.TARGET).count()


def test_relayed_events_published_twice_are_applied_once_by_a_worker(
    probe, start_worker, monkeypatch, settings
):
    settings.IAAS_RELAY_EVENTS = True
    owner = UserFactory()
    endpoint = webhooks.endpoint_create(
        owner_id=owner.pk, url="http://127.0.0.1:9/hooks", event_types=["top_up.succeeded"]
    ).endpoint
    wallet = funded_wallet(owner, amount=1_000)  # its top-up's event is relayed too
    with request_ids.bound("purchase-request-1"):
        top_up(wallet)
    rows = OutboxMessage.objects.filter(handler=relay_probe.NAME)
    assert rows.count() == 2
    assert rows.order_by("id").last().request_id == "purchase-request-1"  # it follows the event
    assert bus.deliver_pending().delivered == 0  # the delivery worker leaves them to the relay

    # Customers' notifications are relayed subscriptions too (their consumer is on the
    # worker as well, and does nothing here: nobody registered an endpoint).
    relayed_rows = OutboxMessage.objects.filter(status=OutboxMessage.Status.PENDING).count()
    assert relayed_rows >= 2

    monkeypatch.setenv("IAAS_REPEAT_PUBLISH", "2")  # every message published twice
    assert relay.relay_pending().relayed == relayed_rows
    assert set(rows.values_list("status", flat=True)) == {OutboxMessage.Status.DONE}
    assert applied() == 0  # nothing applied yet: the consumer is on a worker

    consumer = start_worker("consumer", include="tests.tasks.relay_probe")
    wait_until(
        lambda: consumer.log_count("iaas.events.consume", "succeeded") == 2 * relayed_rows,
        what="every message, twice",
    )
    assert applied() == 2  # four messages of the probe, two events, each applied once
    # The customer's notifications, on the same worker: one delivery per top-up, not two.
    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 2
    assert InboxRecord.objects.filter(consumer=relay_probe.NAME).count() == 2
    # The worker's log line of the top-up's consumer names the request that caused it.
    assert consumer.log_count("relay probe applied", "[purchase-request-1]") == 1


def test_without_a_broker_the_delivery_worker_applies_a_relayed_subscription_once(probe, settings):
    settings.IAAS_RELAY_EVENTS = False
    top_up(funded_wallet())
    assert bus.deliver_pending().delivered >= 1
    assert applied() == 1
    # Delivered again (an operator put the row back in line): the inbox says it was applied.
    OutboxMessage.objects.filter(handler=relay_probe.NAME).update(status=OutboxMessage.Status.PENDING)
    assert bus.deliver_pending().delivered == 1
    assert applied() == 1
