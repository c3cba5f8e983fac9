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
from pathlib import Path

import pytest
import time_machine
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from iaas.contracts import bus
from iaas.notifications import sender, webhooks
from iaas.notifications.models import WebhookDelivery
from tests.api.test_throttle_processes import test_database_url
from tests.notifications.receiver import Receiver, spec_verify
from tests.notifications.test_webhook_delivery import sample_events

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
