"""The warning before a service ends (iaas.spending.ending) never waits for a service row
another transaction holds (a batch, a customer ending it): it skips it, and the next run
warns it. Real threads on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import transaction

from iaas.cloud.models import Server
from iaas.contracts.models import OutboxMessage
from iaas.spending import ending
from tests.factories import funded_wallet
from tests.spending.contexts import CLOUD
from tests.threads import run_at_once

pytestmark = [pytest.mark.concurrency, pytest.mark.django_db(transaction=True)]


def test_a_service_held_elsewhere_is_skipped_and_warned_by_the_next_run(customer, catalog):
    server = CLOUD.buy(funded_wallet(customer, amount=CLOUD.price))
    CLOUD.run_batch(CLOUD.refused)
    due = CLOUD.ends_at(CLOUD.refused) - dt.timedelta(hours=24)
    held, done = threading.Event(), threading.Event()

    def hold():
        with transaction.atomic():
            Server.objects.select_for_update(no_key=True).get(pk=server.pk)
            held.set()
            assert done.wait(30)

    def warn():
        assert held.wait(30)
        try:
            return ending.warn_ends(CLOUD.sold, now=due)
        finally:
            done.set()

    holder, warner = run_at_once(hold, warn)
    assert (holder.error, warner.error, warner.value) == (None, None, 0)
    assert ending.warn_ends(CLOUD.sold, now=due + dt.timedelta(minutes=10)) == 1
    warnings = OutboxMessage.objects.filter(event_type="ServiceEndsSoon")
    assert warnings.values("event_id").distinct().count() == 1
