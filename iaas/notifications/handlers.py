"""What notifications does with an event: one relayed subscription per integration
event customers can hear about (catalog.EVENT_TYPES), applied once per event under its
inbox record, outside the money transaction (ARCHITECTURE.md, "Scaling past one
machine"): it fixes the webhook message, queues a delivery to each of the owner's
endpoints that want its type, and queues the email the owner asked for. Sending happens
later, in the sender (iaas.notifications.sender), never here."""

from __future__ import annotations

import logging
import re

from iaas.contracts import bus
from iaas.contracts.events import CustomerRegistered, Event

from . import catalog, emails, webhooks

logger = logging.getLogger(__name__)


def notify(event: Event) -> None:
    """Queue the webhooks and the email ``event`` calls for (its owner's)."""
    owner_id = getattr(event, "owner_id", None)
    if owner_id is None:
        # Only an event stored before events carried their owner: nobody to tell.
        logger.info("%s %s names no owner: nothing sent", event.type_name(), event.event_id)
        return
    for event_type in catalog.types_of(event):
        webhooks.message_queue(event_type=event_type, event=event, owner_id=owner_id)
        emails.queue_for_event(event_type=event_type, event=event)


def customer_registered(event: CustomerRegistered) -> None:
    emails.on_customer_registered(event)


def subscription_name(event_type: type[Event]) -> str:
    """``notifications.<event in snake case>``: stable, stored in outbox rows."""
    return "notifications." + re.sub(r"(?<!^)(?=[A-Z])", "_", event_type.type_name()).lower()


def subscribe_all() -> None:
    for source in catalog.source_types():
        bus.subscribe(source, notify, name=subscription_name(source), relay=True)
    bus.subscribe(
        CustomerRegistered, customer_registered, name=subscription_name(CustomerRegistered), relay=True
    )
