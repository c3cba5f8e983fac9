"""The sender: claims due webhook deliveries and emails for a lease, sends them outside
any transaction (webhooks through iaas.common.outgoing, emails through Django's email
backend), a few at a time in threads, and records each outcome. Run by the
`send_notifications` job every few seconds on the workers, by `deliver_events --loop`
where no broker is configured, or by the `send_notifications` command.

A sender killed mid-send leaves its claims to expire: the next pass sends those
deliveries again, the same message under the same ``webhook-id`` (at least once; the
receiver deduplicates on the id, as Standard Webhooks asks)."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from iaas.common import outgoing

from . import emails, locks, webhooks
from .models import OutgoingEmail, WebhookDelivery

logger = logging.getLogger(__name__)


def lease() -> dt.timedelta:
    """Long enough for one request to time out, with room to record it."""
    return dt.timedelta(seconds=settings.IAAS_OUTGOING_TIMEOUT * 2 + 30)


@dataclass
class SendReport:
    webhooks_sent: int = 0
    webhooks_failed: int = 0
    emails_sent: int = 0
    emails_failed: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "webhooks_sent": self.webhooks_sent,
            "webhooks_failed": self.webhooks_failed,
            "emails_sent": self.emails_sent,
            "emails_failed": self.emails_failed,
        }


def _claim(model, *, due_filter: Q, limit: int, now: dt.datetime) -> tuple[list[uuid.UUID], dt.datetime]:
    """Claim up to ``limit`` due rows for a lease, oldest due first, in a short
    transaction of its own (SKIP LOCKED: concurrent senders take different rows)."""
    until = now + lease()
    with transaction.atomic():
        ids = locks.due_try_lock(model.objects.filter(due_filter), now=now, limit=limit)
        model.objects.filter(pk__in=ids).update(claimed_until=until)
    return ids, until


def claim_deliveries(*, limit: int, now: dt.datetime) -> tuple[list[WebhookDelivery], dt.datetime]:
    due = Q(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now, endpoint__enabled=True)
    ids, until = _claim(WebhookDelivery, due_filter=due, limit=limit, now=now)
    rows = WebhookDelivery.objects.filter(pk__in=ids).select_related("message", "endpoint")
    return list(rows), until


def claim_emails(*, limit: int, now: dt.datetime) -> tuple[list[OutgoingEmail], dt.datetime]:
    due = Q(status=OutgoingEmail.Status.PENDING, next_attempt_at__lte=now)
    ids, until = _claim(OutgoingEmail, due_filter=due, limit=limit, now=now)
    return list(OutgoingEmail.objects.filter(pk__in=ids)), until


def _post(request: webhooks.Request) -> webhooks.Outcome:
    """One attempt over the network (no database): its outcome, never an exception."""
    started = time.monotonic()
    try:
        response = outgoing.post(request.url, body=request.body, headers=request.headers)
    except outgoing.OutgoingError as error:
        return webhooks.Outcome(error=error.reason, duration_ms=int((time.monotonic() - started) * 1000))
    except Exception as error:  # recorded as the attempt's error; never kills the pass
        logger.exception("webhook attempt %s failed unexpectedly", request.delivery_id)
        return webhooks.Outcome(error=f"internal error: {type(error).__name__}")
    return webhooks.Outcome(
        status_code=response.status,
        duration_ms=response.duration_ms,
        error="" if 200 <= response.status < 300 else f"HTTP {response.status}",
        response_excerpt=response.body[:1000].decode("utf-8", "replace"),
    )


def send_webhooks(*, limit: int, report: SendReport) -> int:
    now = timezone.now()
    deliveries, until = claim_deliveries(limit=limit, now=now)
    if not deliveries:
        return 0
    requests = [webhooks.request_for(delivery) for delivery in deliveries]
    with ThreadPoolExecutor(max_workers=min(settings.IAAS_NOTIFY_THREADS, len(requests))) as pool:
        outcomes = list(pool.map(_post, requests))
    for request, outcome in zip(requests, outcomes, strict=True):
        webhooks.attempt_record(delivery_id=request.delivery_id, outcome=outcome, claimed_until=until)
        if outcome.succeeded:
            report.webhooks_sent += 1
        else:
            report.webhooks_failed += 1
    return len(deliveries)


def send_emails(*, limit: int, report: SendReport) -> int:
    now = timezone.now()
    rows, until = claim_emails(limit=limit, now=now)
    for email in rows:
        error = ""
        try:
            emails.send(email)
        except Exception as failure:  # an SMTP error of any kind is retried
            error = f"{type(failure).__name__}: {failure}"[:500]
            logger.warning("email %s to customer %s not sent: %s", email.pk, email.owner_id, error)
        emails.outcome_record(email_id=email.pk, error=error, claimed_until=until)
        if error:
            report.emails_failed += 1
        else:
            report.emails_sent += 1
    return len(rows)


def send_due(*, limit: int | None = None) -> SendReport:
    """One pass: every due webhook delivery and email, ``limit`` (IAAS_NOTIFY_BATCH) at a
    time, until none is due."""
    limit = limit or settings.IAAS_NOTIFY_BATCH
    report = SendReport()
    while send_webhooks(limit=limit, report=report) + send_emails(limit=limit, report=report):
        pass
    return report
