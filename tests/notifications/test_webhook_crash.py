"""A sender killed in the middle of a request (the worker crashed): the delivery stays
claimed until its lease ends, then the next sender sends the same message under the
same webhook-id, signed afresh. At least once, never lost; the receiver deduplicates
on the id."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import time_machine
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from iaas.contracts import bus
from iaas.notifications import catalog, sender, webhooks
from iaas.notifications.models import WebhookDelivery
from tests.api.test_throttle_processes import test_database_url
from tests.notifications.receiver import Receiver, spec_verify
from tests.notifications.test_webhook_delivery import sample_events
from tests.threads import run_at_once

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.django_db(transaction=True)
@override_settings(IAAS_RELAY_EVENTS=False)
def test_a_sender_killed_mid_request_leaves_the_message_to_the_next_under_the_same_webhook_id(customer):
    hold = threading.Event()
    receiver = Receiver(hold=hold).start()
    try:
        created = webhooks.endpoint_create(
            owner_id=customer.pk, url=receiver.url, event_types=["server.suspended"]
        )
        event = sample_events(customer.pk)["server.suspended"]
        with transaction.atomic():
            bus.publish(event)
        bus.deliver_pending()

        worker = subprocess.Popen(
            [sys.executable, "manage.py", "send_notifications"],
            cwd=REPO,
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "iaas.settings.test",
                "DATABASE_URL": test_database_url(),
            },
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert receiver.arrived.wait(60), "the worker never sent the webhook"
        finally:
            worker.kill()  # SIGKILL: no cleanup, no outcome recorded
            worker.wait(30)
        hold.set()  # from now on the receiver answers at once

        delivery = WebhookDelivery.objects.get()
        assert (delivery.status, delivery.attempts) == ("pending", 0)
        assert delivery.claimed_until > timezone.now()
        # Inside the dead worker's lease nobody sends it (it might still be answering).
        assert sender.send_due().webhooks_sent == 0
        assert len(receiver.requests) == 1

        with time_machine.travel(delivery.claimed_until + dt.timedelta(seconds=1), tick=False):
            assert sender.send_due().webhooks_sent == 1
    finally:
        receiver.stop()

    crashed, resent = receiver.requests
    assert crashed.headers["webhook-id"] == resent.headers["webhook-id"] == str(event.event_id)
    assert crashed.body == resent.body
    assert spec_verify(created.secret, crashed)
    assert spec_verify(created.secret, resent)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("succeeded", 1)


@pytest.mark.django_db(transaction=True)
@override_settings(IAAS_RELAY_EVENTS=False, IAAS_NOTIFY_THREADS=2)
def test_two_senders_at_once_send_each_message_once(customer):
    """Each sender claims a round at a time (SKIP LOCKED), for a lease longer than the
    round can take: a slow endpoint never lets the other sender take a message that is
    still being sent."""
    receiver = SlowReceiver(delay=0.3).start()
    try:
        webhooks.endpoint_create(owner_id=customer.pk, url=receiver.url, event_types=list(catalog.NAMES))
        with transaction.atomic():
            bus.publish(*list(sample_events(customer.pk).values())[:6])
        bus.deliver_pending()
        outcomes = run_at_once(sender.send_due, sender.send_due)
    finally:
        receiver.stop()
    assert [o.error for o in outcomes] == [None, None]
    assert sum(o.value.webhooks_sent for o in outcomes) == 6
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted(
        str(d.message_id) for d in WebhookDelivery.objects.all()
    )
    assert set(WebhookDelivery.objects.values_list("status", "attempts")) == {("succeeded", 1)}


class SlowReceiver(Receiver):
    """Answers each request after ``delay`` seconds (a slow, healthy endpoint)."""

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay
        self.hold = _Sleep(delay)


class _Sleep:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def wait(self, _timeout=None):
        time.sleep(self.seconds)
        return True

    def set(self):
        pass
