"""The event bus and its outbox: written in the publisher's transaction, delivered
once per handler, retried with backoff, never lost."""

import datetime as dt
import uuid
from dataclasses import dataclass

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from iaas.contracts import bus
from iaas.contracts.events import ChargeRecorded, Event, event_from_payload
from iaas.contracts.models import OutboxMessage

pytestmark = pytest.mark.django_db


@dataclass(frozen=True, kw_only=True)
class SomethingHappened(Event):
    thing_id: uuid.UUID
    when: dt.date | None = None


class Recorder:
    def __init__(self, fail_times: int = 0):
        self.seen: list[Event] = []
        self.fail_times = fail_times

    def __call__(self, event):
        if self.fail_times:
            self.fail_times -= 1
            raise RuntimeError("handler down")
        self.seen.append(event)


@pytest.fixture
def recorder(monkeypatch):
    recorder = Recorder()
    handlers = {"tests.recorder": recorder}
    monkeypatch.setitem(bus._handlers, "SomethingHappened", handlers)
    monkeypatch.setitem(bus._handlers_by_name, "tests.recorder", recorder)
    return recorder


def publish_one(**fields):
    event = SomethingHappened(thing_id=uuid.uuid4(), **fields)
    with transaction.atomic():
        bus.publish(event)
    return event


def test_events_round_trip_through_json():
    event = ChargeRecorded(
        charge_id=uuid.uuid4(),
        wallet_id=uuid.uuid4(),
        context="cloud",
        amount=120,
        currency="EUR",
        transaction_date=timezone.now(),
        description="first hour",
    )
    assert event_from_payload("ChargeRecorded", event.to_payload()) == event


@pytest.mark.django_db(transaction=True)
def test_publish_outside_a_transaction_is_refused(recorder):
    with pytest.raises(bus.PublishOutsideTransaction):
        bus.publish(SomethingHappened(thing_id=uuid.uuid4()))
    assert not OutboxMessage.objects.exists()


def test_one_outbox_row_per_subscribed_handler(recorder):
    event = publish_one(when=dt.date(2026, 11, 26))
    row = OutboxMessage.objects.get()
    assert (row.event_id, row.handler, row.status) == (event.event_id, "tests.recorder", "pending")


def test_a_rolled_back_publisher_leaves_no_event(recorder):
    def publish_then_fail():
        with transaction.atomic():
            bus.publish(SomethingHappened(thing_id=uuid.uuid4()))
            raise RuntimeError("the purchase failed")

    with pytest.raises(RuntimeError):
        publish_then_fail()
    assert not OutboxMessage.objects.exists()


def test_delivery_runs_the_handler_once_and_marks_the_row_done(recorder):
    event = publish_one()
    assert bus.deliver_pending() == bus.DeliveryReport(delivered=1)
    assert bus.deliver_pending() == bus.DeliveryReport()
    assert recorder.seen == [event]
    row = OutboxMessage.objects.get()
    assert (row.status, row.attempts) == ("done", 1)
    assert row.delivered_at is not None


def test_a_failing_handler_leaves_the_row_pending_with_the_error_then_retries(recorder, time_machine):
    time_machine.move_to(timezone.now())
    recorder.fail_times = 2
    publish_one()
    assert bus.deliver_pending() == bus.DeliveryReport(failed=1)
    row = OutboxMessage.objects.get()
    assert (row.status, row.attempts) == ("pending", 1)
    assert "handler down" in row.last_error
    assert row.available_at > timezone.now()
    # Not due yet: nothing happens until the backoff has passed.
    assert bus.deliver_pending() == bus.DeliveryReport()
    time_machine.shift(dt.timedelta(seconds=3))
    assert bus.deliver_pending() == bus.DeliveryReport(failed=1)
    time_machine.shift(dt.timedelta(seconds=5))
    assert bus.deliver_pending() == bus.DeliveryReport(delivered=1)
    assert OutboxMessage.objects.get().status == "done"
    assert len(recorder.seen) == 1


def test_after_max_attempts_a_row_is_failed_until_an_operator_retries(recorder, settings, time_machine):
    time_machine.move_to(timezone.now())
    settings.IAAS_OUTBOX_MAX_ATTEMPTS = 2
    recorder.fail_times = 5
    publish_one()
    for _ in range(3):
        bus.deliver_pending()
        time_machine.shift(dt.timedelta(minutes=10))
    row = OutboxMessage.objects.get()
    assert (row.status, row.attempts) == ("failed", 2)
    recorder.fail_times = 0
    assert bus.retry_failed() == 1
    assert bus.deliver_pending() == bus.DeliveryReport(delivered=1)


def test_an_unknown_handler_is_recorded_as_a_failure(recorder):
    publish_one()
    OutboxMessage.objects.update(handler="gone.handler")
    assert bus.deliver_pending() == bus.DeliveryReport(failed=1)
    assert "no handler registered" in OutboxMessage.objects.get().last_error


def test_deliver_events_command_finishes_what_is_pending(recorder):
    from django.core.management import call_command

    publish_one()
    publish_one()
    call_command("deliver_events")
    assert len(recorder.seen) == 2
    assert bus.pending_count() == 0


def test_an_event_nobody_subscribes_to_is_recorded_and_delivered_to_nobody(monkeypatch):
    monkeypatch.setitem(bus._handlers, "SomethingHappened", {})
    event = SomethingHappened(thing_id=uuid.uuid4())
    with transaction.atomic():
        bus.publish(event)
    row = OutboxMessage.objects.get()
    assert (row.event_id, row.handler, row.status) == (event.event_id, bus.NO_SUBSCRIBER, "done")
    assert row.delivered_at == event.occurred_at  # purged with the delivered history
    assert row.payload["thing_id"] == str(event.thing_id)
    assert bus.deliver_pending() == bus.DeliveryReport()
    assert bus.pending_count() == 0


def test_a_batch_of_events_records_those_nobody_takes_in_the_same_statement(monkeypatch):
    monkeypatch.setitem(bus._handlers, "SomethingHappened", {})
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        rows = bus.publish(*(SomethingHappened(thing_id=uuid.uuid4()) for _ in range(3)))
    assert [q["sql"].split()[0] for q in queries if "outbox" in q["sql"]] == ["INSERT"]
    assert [row.handler for row in rows] == [bus.NO_SUBSCRIBER] * 3
    assert OutboxMessage.objects.filter(status="done", handler="").count() == 3
