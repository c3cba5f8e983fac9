"""A consumer outside the money transaction, for the relay's tests: a relayed subscription
to WalletToppedUp whose effect is one row per event (a used operation token named after
the event, under a unique constraint, so an effect applied twice could not hide). The
test process registers it for the test's length (``registered``); a worker imports this
module (``celery worker --include``) and registers it when Django is ready."""

from __future__ import annotations

import logging
from contextlib import contextmanager

from celery import signals

from iaas.contracts import bus
from iaas.contracts.events import WalletToppedUp

logger = logging.getLogger(__name__)

NAME = "tests.relay_probe"
TARGET = "relay-probe"


def record(event: WalletToppedUp) -> None:
    from iaas.operations.models import UsedOperationToken

    UsedOperationToken.objects.create(token=event.event_id, target=TARGET)
    logger.info("relay probe applied %s", event.event_id)


def register() -> None:
    bus.subscribe(WalletToppedUp, record, name=NAME, relay=True)


@contextmanager
def registered():
    """The probe subscribed in this process, and unsubscribed afterwards."""
    saved = (dict(bus._subscriptions), dict(bus._handlers_by_name), set(bus._relayed))
    saved_handlers = dict(bus._handlers[WalletToppedUp.type_name()])
    register()
    try:
        yield
    finally:
        bus._subscriptions.clear()
        bus._subscriptions.update(saved[0])
        bus._handlers_by_name.clear()
        bus._handlers_by_name.update(saved[1])
        bus._relayed.clear()
        bus._relayed.update(saved[2])
        bus._handlers[WalletToppedUp.type_name()] = saved_handlers


@signals.worker_init.connect
def _in_the_worker(**kwargs) -> None:
    register()
