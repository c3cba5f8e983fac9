# ruff: noqa: E501 (a table of sample events, one a line)
"""Webhooks end to end against a real HTTP receiver on loopback (allowed by the test
settings): every event type delivered with the documented body and a signature the
receiver verifies from the specification; an endpoint failing for a while gets each
message again under the same webhook-id until it answers; retries give up after their
window; an endpoint failing for five days is disabled."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
import time_machine
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from iaas.contracts import bus
from iaas.contracts import events as e
from iaas.notifications import catalog, sender, webhooks
from iaas.notifications.models import (
    EmailSettings,
    OutgoingEmail,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from tests.notifications.receiver import Receiver, spec_verify

pytestmark = pytest.mark.django_db

# Delivered here, by deliver_pending (no broker in between), and retried at once.
IN_PROCESS = override_settings(IAAS_RELAY_EVENTS=False, IAAS_WEBHOOK_FIRST_RETRY_SECONDS=0)


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


def sample_events(owner_id: int) -> dict[str, e.Event]:
    """One integration event per webhook event type, with a resource like the API's."""
    wallet_id, service_id = uuid.uuid4(), uuid.uuid4()
    wallet = {"id": str(wallet_id), "currency": "EUR", "status": "active", "balance": 900, "reserved": 0,
              "available": 900, "created_at": "2026-11-01T10:00:00+00:00", "low_balance_threshold": 1000}  # fmt: skip
    service = {"id": str(service_id), "name": "web-1", "status": "suspended", "suspension_causes": ["unpaid"]}
    ends_at = timezone.now() + dt.timedelta(days=1)
    top_up = {"id": str(uuid.uuid4()), "amount": 5000, "currency": "EUR", "status": "succeeded"}
    common = {"wallet_id": wallet_id, "owner_id": owner_id}
    svc = {**common, "resource": service}
    return {
        "wallet.low_balance": e.LowBalanceReached(**common, currency="EUR", available=900, threshold=1000, resource=wallet),
        "top_up.succeeded": e.WalletToppedUp(**common, top_up_id=uuid.UUID(top_up["id"]), amount=5000, currency="EUR", resource=top_up),
        "top_up.failed": e.TopUpFailed(**common, top_up_id=uuid.uuid4(), amount=5000, currency="EUR", reason="expired", resource={**top_up, "status": "failed"}),
        "top_up.reversed": e.TopUpReversed(**common, top_up_id=uuid.UUID(top_up["id"]), kind="dispute", amount=5000, taken=900, debt_added=4100, currency="EUR", frozen=True, resource=top_up),
        "refund.created": e.ChargeRefunded(**common, refund_id=uuid.uuid4(), charge_id=uuid.uuid4(), context="cloud", amount=7, currency="EUR", resource={"id": "r"}),
        "invoice.issued": e.InvoiceIssued(invoice_id=uuid.uuid4(), number="INV-2026-000001", owner_id=owner_id, currency="EUR", total=1234, resource={"id": "i", "total": 1234}),
        "server.suspended": e.ServerSuspended(**svc, server_id=service_id, reason="unpaid", cause="unpaid"),
        "server.resumed": e.ServerResumed(**svc, server_id=service_id),
        "server.termination_scheduled": e.ServiceEndsSoon(**svc, context="cloud", kind="server", service_id=service_id, ends_at=ends_at),
        "server.terminated": e.ServerTerminated(**svc, server_id=service_id, reason="unpaid"),
        "subscription.suspended": e.SubscriptionSuspended(**svc, subscription_id=service_id, reason="operator hold", cause="operator"),
        "subscription.resumed": e.SubscriptionResumed(**svc, subscription_id=service_id),
        "subscription.cancellation_scheduled": e.ServiceEndsSoon(**svc, context="hosting", kind="subscription", service_id=service_id, ends_at=ends_at),
        "subscription.cancelled": e.SubscriptionCancelled(**svc, subscription_id=service_id, reason="unpaid"),
        "volume.suspended": e.VolumeSuspended(**svc, volume_id=service_id, reason="wallet_blocked", cause="wallet_blocked"),
        "volume.resumed": e.VolumeResumed(**svc, volume_id=service_id),
        "volume.deletion_scheduled": e.ServiceEndsSoon(**svc, context="storage", kind="volume", service_id=service_id, ends_at=ends_at),
        "volume.deleted": e.VolumeDeleted(**svc, volume_id=service_id, reason="unpaid"),
    }  # fmt: skip


def publish(*events: e.Event) -> None:
    with transaction.atomic():
        bus.publish(*events)


def endpoint_for(owner_id: int, url: str, types=catalog.NAMES) -> webhooks.CreatedEndpoint:
    return webhooks.endpoint_create(owner_id=owner_id, url=url, event_types=list(types))


def test_the_samples_cover_every_event_type(customer):
    assert set(sample_events(customer.pk)) == set(catalog.NAMES)


@IN_PROCESS
def test_every_event_type_arrives_signed_with_its_documented_body(customer, receiver):
    created = endpoint_for(customer.pk, receiver.url)
    samples = sample_events(customer.pk)
    publish(*samples.values())
    bus.deliver_pending()
    report = sender.send_due()

    assert report.webhooks_sent == len(samples)
    assert report.webhooks_failed == 0
    assert len(receiver.requests) == len(samples)
    by_type = {json.loads(r.body)["type"]: r for r in receiver.requests}
    assert set(by_type) == set(samples)
    for name, event in samples.items():
        received = by_type[name]
        assert spec_verify(created.secret, received), name
        body = json.loads(received.body)
        assert body["id"] == received.headers["webhook-id"] == str(event.event_id)
        assert dt.datetime.fromisoformat(body["created_at"]) == event.occurred_at
        assert body["data"]["object"] == event.resource
        assert received.headers["content-type"] == "application/json"
        assert abs(int(received.headers["webhook-timestamp"]) - timezone.now().timestamp()) < 60
    assert by_type["server.suspended"].body
    assert json.loads(by_type["server.suspended"].body)["data"]["cause"] == "unpaid"
    ends = json.loads(by_type["volume.deletion_scheduled"].body)["data"]["ends_at"]
    assert dt.datetime.fromisoformat(ends) == samples["volume.deletion_scheduled"].ends_at
    low = json.loads(by_type["wallet.low_balance"].body)["data"]
    assert (low["available"], low["threshold"], low["currency"]) == (900, 1000, "EUR")
    reversal = json.loads(by_type["top_up.reversed"].body)["data"]
    assert reversal["kind"] == "dispute"
    assert (reversal["amount"], reversal["taken"], reversal["debt_added"]) == (5000, 900, 4100)
    assert (reversal["currency"], reversal["frozen"]) == ("EUR", True)


@IN_PROCESS
def test_a_reversed_top_up_reaches_each_endpoint_that_wants_it_once(customer, other_customer, receiver):
    """One delivery per endpoint of the owner that asked for ``top_up.reversed``, with the
    body docs/webhooks.md documents: the top-up as the API shows it, what was taken back,
    from where, what is owed, and whether the wallet is being frozen."""
    wanting = {
        "/hooks/iaas/all": endpoint_for(customer.pk, f"{receiver.url}/all"),
        "/hooks/iaas/money": endpoint_for(
            customer.pk, f"{receiver.url}/money", types=["top_up.succeeded", "top_up.reversed"]
        ),
    }
    endpoint_for(customer.pk, f"{receiver.url}/other", types=["top_up.succeeded", "top_up.failed"])
    endpoint_for(other_customer.pk, f"{receiver.url}/theirs")
    event = sample_events(customer.pk)["top_up.reversed"]
    publish(event)
    bus.deliver_pending()
    sender.send_due()

    assert sorted(WebhookDelivery.objects.values_list("endpoint_id", flat=True)) == sorted(
        created.endpoint.pk for created in wanting.values()
    )
    by_path = {received.path: received for received in receiver.requests}
    assert len(receiver.requests) == len(by_path) == 2
    assert set(by_path) == set(wanting)
    for path, created in wanting.items():
        received = by_path[path]
        assert spec_verify(created.secret, received)
        assert json.loads(received.body) == {
            "id": str(event.event_id),
            "type": "top_up.reversed",
            "created_at": event.occurred_at.isoformat().replace("+00:00", "Z"),
            "data": {
                "object": event.resource,
                "kind": "dispute",
                "amount": 5000,
                "taken": 900,
                "debt_added": 4100,
                "currency": "EUR",
                "frozen": True,
            },
        }


@IN_PROCESS
def test_an_endpoint_gets_only_the_types_it_asked_for_and_only_its_owners_events(
    customer, other_customer, receiver
):
    endpoint_for(customer.pk, receiver.url, types=["top_up.succeeded"])
    mine, theirs = sample_events(customer.pk), sample_events(other_customer.pk)
    publish(mine["top_up.succeeded"], mine["server.suspended"], theirs["top_up.succeeded"])
    bus.deliver_pending()
    sender.send_due()
    assert [json.loads(r.body)["id"] for r in receiver.requests] == [str(mine["top_up.succeeded"].event_id)]


@IN_PROCESS
def test_a_failing_endpoint_gets_the_same_message_until_it_answers(customer):
    receiver = Receiver(statuses=[500, 503, 404]).start()
    try:
        created = endpoint_for(customer.pk, receiver.url)
        event = sample_events(customer.pk)["top_up.succeeded"]
        publish(event)
        bus.deliver_pending()
        sender.send_due()  # retries are due at once here: fails three times, then 204
    finally:
        receiver.stop()

    assert len(receiver.requests) == 4
    assert {r.headers["webhook-id"] for r in receiver.requests} == {str(event.event_id)}
    assert len({r.body for r in receiver.requests}) == 1  # the same bytes every time
    assert all(spec_verify(created.secret, r) for r in receiver.requests)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 4, 204)
    attempts = list(delivery.attempt_set.order_by("number").values_list("number", "status_code"))
    assert attempts == [(1, 500), (2, 503), (3, 404), (4, 204)]
    assert WebhookEndpoint.objects.get().failing_since is None  # cleared by the success


@override_settings(IAAS_RELAY_EVENTS=False)
def test_retries_back_off_with_jitter_and_give_up_after_three_days(customer):
    receiver = Receiver(statuses=[500] * 100).start()
    try:
        endpoint_for(customer.pk, receiver.url)
        publish(sample_events(customer.pk)["top_up.succeeded"])
        bus.deliver_pending()
        start = timezone.now()
        delays = []
        with time_machine.travel(start, tick=False) as clock:
            for _ in range(40):
                if sender.send_due().webhooks_failed == 0:
                    break
                delivery = WebhookDelivery.objects.get()
                if delivery.status != "pending":
                    break
                delays.append((delivery.next_attempt_at - timezone.now()).total_seconds())
                clock.move_to(delivery.next_attempt_at)
    finally:
        receiver.stop()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed"
    assert delivery.last_attempt_at - start >= dt.timedelta(hours=72)
    assert delivery.last_attempt_at - start < dt.timedelta(hours=72 + 15)
    # Exponential (about 30 s, 2 min, 8 min, ...) within ±20%, capped at 12 hours.
    for number, delay in enumerate(delays[:5], start=1):
        assert 0.8 * 30 * 4 ** (number - 1) <= delay <= 1.2 * 30 * 4 ** (number - 1)
    assert max(delays) <= 12 * 3600 * 1.2
    assert len(receiver.requests) == delivery.attempts == WebhookAttempt.objects.count()


@override_settings(IAAS_RELAY_EVENTS=False)  # and the real retry schedule
def test_an_endpoint_failing_for_five_days_is_disabled_and_gets_nothing_more(customer):
    receiver = Receiver(statuses=[500] * 1000).start()
    samples = sample_events(customer.pk)
    start = timezone.now()
    EmailSettings.objects.create(
        owner=customer, address="owner@example.com", verified_at=start, services=False
    )
    try:
        endpoint_for(customer.pk, receiver.url)
        with time_machine.travel(start, tick=False) as clock:
            # An event a day, each retried on its schedule (at most 12 h apart): failing
            # without a break.
            day = 0
            while WebhookEndpoint.objects.get().enabled:
                if timezone.now() >= start + dt.timedelta(days=day):
                    publish(list(samples.values())[day])
                    bus.deliver_pending()
                    day += 1
                sender.send_due()
                due = WebhookDelivery.objects.filter(status="pending").order_by("next_attempt_at").first()
                clock.move_to(min(due.next_attempt_at, start + dt.timedelta(days=day)))
                assert timezone.now() - start < dt.timedelta(days=6), "never disabled"
            endpoint = WebhookEndpoint.objects.get()
            assert dt.timedelta(days=5) <= endpoint.disabled_at - start < dt.timedelta(days=5, hours=13)
            assert endpoint.failing_since == start
            assert "failed for 5 days" in endpoint.disabled_reason
            seen = len(receiver.requests)
            publish(samples["volume.deleted"])
            bus.deliver_pending()
            sender.send_due()
    finally:
        receiver.stop()
    assert len(receiver.requests) == seen  # nothing more sent to it
    # Its owner is told, whatever their email preferences (it is about their account).
    [told] = OutgoingEmail.objects.filter(kind="webhook_endpoint_disabled")
    assert (told.owner_id, told.to) == (customer.pk, "owner@example.com")


@override_settings(IAAS_RELAY_EVENTS=False, IAAS_WEBHOOK_RETRY_FOR_HOURS=0)
def test_failures_weeks_apart_are_not_one_outage(customer):
    """An endpoint that failed once long ago (that delivery gave up) and fails once today
    has not been failing for weeks: only failing without a break disables it."""
    receiver = Receiver(statuses=[500, 500]).start()
    samples = sample_events(customer.pk)
    start = timezone.now()
    try:
        endpoint_for(customer.pk, receiver.url)
        with time_machine.travel(start, tick=False) as clock:
            publish(samples["server.suspended"])
            bus.deliver_pending()
            sender.send_due()
            clock.move_to(start + dt.timedelta(days=14))
            publish(samples["server.resumed"])
            bus.deliver_pending()
            sender.send_due()
    finally:
        receiver.stop()
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.enabled
    assert endpoint.failing_since == start + dt.timedelta(days=14)  # a new count
    assert len(receiver.requests) == 2


@IN_PROCESS
def test_a_rotated_secret_signs_beside_the_new_one_for_a_day(customer, receiver):
    first = endpoint_for(customer.pk, receiver.url)
    second = webhooks.endpoint_rotate_secret(owner_id=customer.pk, endpoint_id=first.endpoint.pk)
    assert second.secret != first.secret
    assert second.secret.startswith("whsec_")
    samples = sample_events(customer.pk)
    publish(samples["top_up.succeeded"])
    bus.deliver_pending()
    sender.send_due()
    received = receiver.requests[-1]
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    assert spec_verify(first.secret, received)
    assert spec_verify(second.secret, received)

    with time_machine.travel(timezone.now() + dt.timedelta(hours=24, seconds=1)):
        publish(samples["top_up.failed"])
        bus.deliver_pending()
        sender.send_due()
    received = receiver.requests[-1]
    assert spec_verify(second.secret, received)
    assert not spec_verify(first.secret, received)


@IN_PROCESS
def test_a_redelivery_sends_the_same_message_under_the_same_webhook_id(customer, receiver):
    created = endpoint_for(customer.pk, receiver.url)
    event = sample_events(customer.pk)["invoice.issued"]
    publish(event)
    bus.deliver_pending()
    sender.send_due()
    delivery = WebhookDelivery.objects.get()
    webhooks.delivery_redeliver(owner_id=customer.pk, delivery_id=delivery.pk)
    sender.send_due()
    first, again = receiver.requests
    assert first.headers["webhook-id"] == again.headers["webhook-id"] == str(event.event_id)
    assert first.body == again.body
    assert spec_verify(created.secret, again)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.redeliveries) == ("succeeded", 2, 1)


@IN_PROCESS
def test_a_duplicate_event_queues_nothing_more(customer, receiver):
    endpoint_for(customer.pk, receiver.url)
    event = sample_events(customer.pk)["top_up.succeeded"]
    publish(event)
    bus.deliver_pending()
    # The relay may hand the same event over twice: the inbox applies it once.
    assert bus.consume_relayed(
        "notifications.wallet_topped_up", event_type="WalletToppedUp", event_id=str(event.event_id),
        payload=event.to_payload(),
    ) is False  # fmt: skip
    sender.send_due()
    assert len(receiver.requests) == 1 == WebhookDelivery.objects.count()


def test_secrets_are_stored_only_encrypted(customer):
    created = endpoint_for(customer.pk, "http://127.0.0.1:9/x")
    row = WebhookEndpoint.objects.filter(pk=created.endpoint.pk).values().get()
    assert not any(created.secret in str(value) for value in row.values())
    assert webhooks.signing_secrets(created.endpoint, now=timezone.now()) == [created.secret]
