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


def webhook_lease() -> dt.timedelta:
    """A round's claim: its requests run at once, each at most IAAS_OUTGOING_TIMEOUT (the
    deadline covers resolving, connecting and reading), with room to record them. A
    claim that ran out while its sender was still sending would let another sender send
    the same message again."""
    return dt.timedelta(seconds=settings.IAAS_OUTGOING_TIMEOUT * 2 + 30)


def email_lease() -> dt.timedelta:
    """A round's claim for emails: an SMTP exchange is several steps, each up to
    EMAIL_TIMEOUT (connect, greeting, TLS, login, the message, quit)."""
    return dt.timedelta(seconds=settings.EMAIL_TIMEOUT * 8 + 30)


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


def _claim(
    model, *, due_filter: Q, limit: int, now: dt.datetime, lease: dt.timedelta
) -> tuple[list[uuid.UUID], dt.datetime]:
    """Claim up to ``limit`` due rows for ``lease``, most overdue first, in a short
    transaction of its own (SKIP LOCKED: concurrent senders take different rows)."""
    until = now + lease
    with transaction.atomic():
        ids = locks.due_try_lock(model.objects.filter(due_filter), now=now, limit=limit)
        model.objects.filter(pk__in=ids).update(claimed_until=until)
    return ids, until


def claim_deliveries(*, limit: int, now: dt.datetime) -> tuple[list[WebhookDelivery], dt.datetime]:
    due = Q(status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now, endpoint__enabled=True)
    ids, until = _claim(WebhookDelivery, due_filter=due, limit=limit, now=now, lease=webhook_lease())
    rows = WebhookDelivery.objects.filter(pk__in=ids).select_related("message", "endpoint")
    return list(rows), until


def claim_emails(*, limit: int, now: dt.datetime) -> tuple[list[OutgoingEmail], dt.datetime]:
    due = Q(status=OutgoingEmail.Status.PENDING, next_attempt_at__lte=now)
    ids, until = _claim(OutgoingEmail, due_filter=due, limit=limit, now=now, lease=email_lease())
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


def send_webhooks(*, report: SendReport) -> int:
    """One round: as many due deliveries as there are threads, sent at once."""
    deliveries, until = claim_deliveries(limit=settings.IAAS_NOTIFY_THREADS, now=timezone.now())
    if not deliveries:
        return 0
    requests = [webhooks.request_for(delivery) for delivery in deliveries]
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        outcomes = list(pool.map(_post, requests))
    for request, outcome in zip(requests, outcomes, strict=True):
        webhooks.attempt_record(delivery_id=request.delivery_id, outcome=outcome, claimed_until=until)
        if outcome.succeeded:
            report.webhooks_sent += 1
        else:
            report.webhooks_failed += 1
    return len(deliveries)


def _mail(email: OutgoingEmail) -> str:
    """Send one email (no database): "" or why it was not sent."""
    try:
        emails.send(email)
    except Exception as failure:  # an SMTP error of any kind is retried
        error = f"{type(failure).__name__}: {failure}"[:500]
        logger.warning("email %s to customer %s not sent: %s", email.pk, email.owner_id, error)
        return error
    return ""


def send_emails(*, report: SendReport) -> int:
    """One round: as many due emails as there are threads, sent at once."""
    rows, until = claim_emails(limit=settings.IAAS_NOTIFY_THREADS, now=timezone.now())
    if not rows:
        return 0
    with ThreadPoolExecutor(max_workers=len(rows)) as pool:
        errors = list(pool.map(_mail, rows))
    for email, error in zip(rows, errors, strict=True):
        emails.outcome_record(email_id=email.pk, error=error, claimed_until=until)
        if error:
            report.emails_failed += 1
        else:
            report.emails_sent += 1
    return len(rows)


def send_due(*, rounds: int | None = None) -> SendReport:
    """Send what is due, a round of webhooks and a round of emails at a time, until none
    is due or after ``rounds`` rounds (the event delivery loop sends one round per pass,
    so settlements never wait behind a backlog of slow endpoints)."""
    report = SendReport()
    done = 0
    while rounds is None or done < rounds:
        done += 1
        if not send_webhooks(report=report) + send_emails(report=report):
            break
    return report
