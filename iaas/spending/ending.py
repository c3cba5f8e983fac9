"""The warning before a service ends (ARCHITECTURE.md, "A service's life": the customer
can see when a service will be ended for non-payment, and is told before): once per
suspension, when a service suspended for ``unpaid`` alone will be ended by its context's
batch run within IAAS_END_WARNING_HOURS, its owner is told by ``ServiceEndsSoon`` (the
moment, and the service as its API shows it). Written once for every selling context.

A service whose grace is shorter than the warning window is warned at the first run
after its suspension. The service records the warning (``end_warned_at``); any change
of its causes clears it (iaas.spending.models), so a later suspension warns again.

Per batch, one short transaction: the next services due, locked in id order, SKIP
LOCKED (service rows only: nothing else is locked or written but their warning and the
outbox), marked warned with one UPDATE, and their events published. A service another
transaction holds is warned by the next run (every ten minutes: the job ``warn_ends``)."""

from __future__ import annotations

import datetime as dt
import logging
from functools import partial

from django.conf import settings
from django.db import transaction

from iaas.contracts import bus

from . import batch, locks
from .sold import SoldServices

logger = logging.getLogger(__name__)


def end_warning_window() -> dt.timedelta:
    return dt.timedelta(hours=settings.IAAS_END_WARNING_HOURS)


def warn_ends(
    sold: SoldServices, *, now: dt.datetime, window: dt.timedelta | None = None, size: int | None = None
) -> int:
    """Warn the owner of each of ``sold``'s services that its context's batch run will end
    within ``window`` of ``now`` (default IAAS_END_WARNING_HOURS), once per suspension.
    Returns how many were warned."""
    window = end_warning_window() if window is None else window
    size = size or settings.IAAS_BATCH_SIZE
    # Ends within the window: unpaid since (now + window - grace) or earlier.
    unpaid_since_by = now + window - sold.grace()
    warned, after = 0, None
    while True:
        services = _warn_batch(sold, now=now, unpaid_since_by=unpaid_since_by, after=after, size=size)
        warned += len(services)
        if len(services) < size:
            return warned
        after = services[-1].pk


def _warn_batch(
    sold: SoldServices, *, now: dt.datetime, unpaid_since_by: dt.datetime, after, size: int
) -> list:
    with transaction.atomic():
        batch.start_batch_transaction()
        services = locks.services_ending_try_lock(
            sold.service_model,
            unpaid_since_by=unpaid_since_by,
            after=after,
            limit=size,
            shown=partial(sold.with_shown_data, now=now),
        )
        for service in services:
            service.end_warned_at = now
        batch.save_rows(sold.service_model, services, ("id", "end_warned_at"))
        bus.publish(*[sold.ends_soon(service, now=now) for service in services])
    if services:
        logger.info("%s: warned %d %s(s) of their end", sold.context, len(services), sold.kind)
    return services
