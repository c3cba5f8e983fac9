"""Subscriptions have stable names (ARCHITECTURE.md, pitfalls): an outbox row names the
subscription it is for, not the handler function's import path, so moving or renaming a
function never strands pending rows; two subscriptions under one name are refused when
the app starts; migration contracts 0003 renamed the rows written before."""

from __future__ import annotations

import importlib
import uuid
from dataclasses import dataclass

import pytest
from django.apps import apps as django_apps
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from iaas.contracts import bus
from iaas.contracts.events import (
    AllowanceReleased,
    ChargeRecorded,
    ChargeRefunded,
    ChargeSettled,
    Event,
    ReleaseRequested,
)
from iaas.contracts.models import OutboxMessage

pytestmark = pytest.mark.django_db


@dataclass(frozen=True, kw_only=True)
class NamedSubscriptionsEvent(Event):
    thing_id: uuid.UUID


@dataclass(frozen=True, kw_only=True)
class NamedSubscriptionsOtherEvent(Event):
    thing_id: uuid.UUID


def fresh_registry(monkeypatch) -> None:
    """An empty bus, as in a process that has not run any AppConfig.ready() yet."""
    monkeypatch.setattr(bus, "_subscriptions", {})
    monkeypatch.setattr(bus, "_handlers", type(bus._handlers)(dict))
    monkeypatch.setattr(bus, "_handlers_by_name", {})
    monkeypatch.setattr(bus, "_batch_handlers_by_name", {})
    monkeypatch.setattr(bus, "_conditions", {})


def publish(event: Event) -> None:
    with transaction.atomic():
        bus.publish(event)


def test_the_apps_subscriptions_have_stable_names_not_import_paths():
    names = {
        event_type: bus.subscribers(event_type)
        for event_type in (ChargeRecorded, AllowanceReleased, ReleaseRequested)
    }
    assert names == {
        ChargeRecorded: ["billing.settle_charge"],
        AllowanceReleased: ["billing.apply_release"],
        ReleaseRequested: [
            "cloud.release_on_request",
            "hosting.release_on_request",
            "storage.release_on_request",
        ],
    }
    for name in bus._handlers_by_name:
        handler = bus._handlers_by_name[name]
        assert name != f"{handler.__module__}.{handler.__qualname__}"


def test_an_outbox_row_stores_the_subscription_name(monkeypatch):
    fresh_registry(monkeypatch)
    seen = []
    bus.subscribe(NamedSubscriptionsEvent, seen.append, name="tests.something_recorder")
    publish(NamedSubscriptionsEvent(thing_id=uuid.uuid4()))
    assert OutboxMessage.objects.get().handler == "tests.something_recorder"


def test_a_moved_and_renamed_handler_still_delivers_the_pending_rows(monkeypatch):
    fresh_registry(monkeypatch)
    before, after = [], []

    def record_in_the_old_place(event):
        before.append(event)

    def record_in_the_new_place(event):
        after.append(event)

    bus.subscribe(NamedSubscriptionsEvent, record_in_the_old_place, name="tests.something_recorder")
    event = NamedSubscriptionsEvent(thing_id=uuid.uuid4())
    publish(event)
    # A release moves the function (another module, another name); the process restarts.
    fresh_registry(monkeypatch)
    bus.subscribe(NamedSubscriptionsEvent, record_in_the_new_place, name="tests.something_recorder")
    assert bus.deliver_pending() == bus.DeliveryReport(delivered=1)
    assert (before, after) == ([], [event])


def test_a_subscription_with_a_condition_gets_rows_only_for_the_events_it_takes(monkeypatch):
    fresh_registry(monkeypatch)
    wanted = uuid.uuid4()
    bus.subscribe(NamedSubscriptionsEvent, print, name="tests.everything")
    bus.subscribe(
        NamedSubscriptionsEvent, print, name="tests.one_thing", when=lambda event: event.thing_id == wanted
    )
    other = uuid.uuid4()
    with transaction.atomic():
        bus.publish(NamedSubscriptionsEvent(thing_id=other), NamedSubscriptionsEvent(thing_id=wanted))
    rows = OutboxMessage.objects.values_list("handler", "payload__thing_id")
    assert sorted(rows) == sorted(
        [
            ("tests.everything", str(other)),
            ("tests.everything", str(wanted)),
            ("tests.one_thing", str(wanted)),
        ]
    )


def test_charge_settled_and_charge_refunded_reach_the_context_they_are_about_only():
    for event in (
        ChargeSettled(wallet_id=uuid.uuid4(), context="cloud", ledger_entry_id=uuid.uuid4(), charge_ids=()),
        ChargeRefunded(
            refund_id=uuid.uuid4(),
            wallet_id=uuid.uuid4(),
            charge_id=uuid.uuid4(),
            context="hosting",
            amount=1,
            currency="EUR",
        ),
    ):
        publish(event)
        handlers = list(
            OutboxMessage.objects.filter(event_id=event.event_id).values_list("handler", flat=True)
        )
        # (Its customer's notifications hear of every one: nothing for them to apply to.)
        assert [h.split(".")[0] for h in handlers if not h.startswith("notifications.")] == [event.context]


def test_two_subscriptions_under_one_name_are_refused_at_start_up(monkeypatch):
    fresh_registry(monkeypatch)

    def one(event):
        pass

    def another(event):
        pass

    bus.subscribe(NamedSubscriptionsEvent, one, name="tests.handler")
    bus.subscribe(NamedSubscriptionsEvent, one, name="tests.handler")  # ready() run twice: the same one
    with pytest.raises(bus.DuplicateSubscription, match=r"tests\.handler"):
        bus.subscribe(NamedSubscriptionsEvent, another, name="tests.handler")
    with pytest.raises(bus.DuplicateSubscription):
        bus.subscribe(NamedSubscriptionsOtherEvent, one, name="tests.handler")
    assert issubclass(bus.DuplicateSubscription, ImproperlyConfigured)  # django.setup() fails
    assert bus.subscribers(NamedSubscriptionsEvent) == ["tests.handler"]
    assert bus.subscribers(NamedSubscriptionsOtherEvent) == []


@pytest.mark.parametrize("name", ["", "settle", "Billing.Settle", "billing.settle charge", "x." + "a" * 200])
def test_a_subscription_name_is_a_dotted_lower_case_identifier(monkeypatch, name):
    fresh_registry(monkeypatch)
    with pytest.raises(ValueError, match="subscription name"):
        bus.subscribe(NamedSubscriptionsEvent, print, name=name)


def test_the_migration_renames_undelivered_rows_and_leaves_the_delivered_history(monkeypatch):
    migration = importlib.import_module("iaas.contracts.migrations.0003_stable_handler_names")
    old = {
        "iaas.billing.handlers.settle_charge": "billing.settle_charge",
        "iaas.billing.handlers.apply_release": "billing.apply_release",
        "iaas.cloud.handlers.release_on_request": "cloud.release_on_request",
        "iaas.hosting.handlers.release_on_request": "hosting.release_on_request",
    }
    assert old == migration.RENAMED
    statuses = [OutboxMessage.Status.PENDING, OutboxMessage.Status.FAILED, OutboxMessage.Status.DONE]
    for handler in old:
        for status in statuses:
            OutboxMessage.objects.create(
                event_id=uuid.uuid4(), event_type="ChargeRecorded", handler=handler, payload={}, status=status
            )
    migration.rename_undelivered(django_apps, None)
    renamed = set(OutboxMessage.objects.exclude(status="done").values_list("handler", flat=True))
    kept = set(OutboxMessage.objects.filter(status="done").values_list("handler", flat=True))
    assert (renamed, kept) == (set(old.values()), set(old))
    migration.restore_undelivered(django_apps, None)
    assert set(OutboxMessage.objects.values_list("handler", flat=True)) == set(old)
