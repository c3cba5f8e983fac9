"""The outbox relay: rows of subscriptions outside the money transaction (``relay=True``)
are published to the broker's events queue, each waiting for the broker's confirm, and
marked delivered in a transaction of their own afterwards. Killed at any point, it loses
nothing: a row claimed and not marked is claimed again when its lease ends and published
again, and the consumer's inbox record makes the second copy a no-op."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from iaas.contracts import bus

from . import broker

logger = logging.getLogger(__name__)

CONSUME_TASK = "iaas.events.consume"
LEASE = dt.timedelta(seconds=60)


@dataclass
class RelayReport:
    relayed: int = 0
    failed: int = 0


def relay_pending(*, limit: int = 10_000, batch_size: int = 200) -> RelayReport:
    """Relay due rows until none is left (or about ``limit``)."""
    report = RelayReport()
    while report.relayed + report.failed < limit:
        claimed = bus.relay_claim(limit=min(batch_size, limit - report.relayed - report.failed), lease=LEASE)
        if not claimed:
            break
        published: list[int] = []
        try:
            for message in claimed:
                _publish(message)
                published.append(message.id)
        except Exception as error:  # the broker refused or went away: the rest waits
            logger.warning("relay stopped after %d of %d message(s): %r", len(published), len(claimed), error)
            bus.relay_done(published)
            bus.relay_failed([m.id for m in claimed if m.id not in set(published)], repr(error))
            report.relayed += len(published)
            report.failed += len(claimed) - len(published)
            break
        bus.relay_done(published)
        report.relayed += len(published)
    return report


def _publish(message: bus.RelayedMessage) -> None:
    broker.send(
        CONSUME_TASK,
        queue=broker.topology().events_queue,
        kwargs={
            "subscription": message.subscription,
            "event_type": message.event_type,
            "event_id": message.event_id,
            "payload": message.payload,
        },
        task_id=f"event-{message.event_id}-{message.subscription}",
        request_id=message.request_id,
    )
