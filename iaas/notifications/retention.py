"""Nothing grows without bound (ARCHITECTURE.md): attempts older than
IAAS_NOTIFICATION_RETENTION_DAYS are deleted, and so are finished deliveries (succeeded
or given up) and sent or failed emails of that age, then messages no delivery needs.
Pending ones are never deleted: they are still to be sent."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.utils import timezone

from .models import OutgoingEmail, WebhookAttempt, WebhookDelivery, WebhookMessage

BATCH = 5000


def _in_batches(queryset) -> int:
    deleted = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:BATCH])
        if not ids:
            return deleted
        deleted += queryset.model.objects.filter(pk__in=ids).delete()[1].get(queryset.model._meta.label, 0)


def notifications_purge(*, now: dt.datetime | None = None) -> dict[str, int]:
    cutoff = (now or timezone.now()) - dt.timedelta(days=settings.IAAS_NOTIFICATION_RETENTION_DAYS)
    attempts = _in_batches(WebhookAttempt.objects.filter(attempted_at__lt=cutoff).order_by("attempted_at"))
    deliveries = _in_batches(
        WebhookDelivery.objects.filter(created_at__lt=cutoff)
        .exclude(status=WebhookDelivery.Status.PENDING)
        .order_by("created_at")
    )
    messages = _in_batches(
        WebhookMessage.objects.filter(created_at__lt=cutoff, deliveries__isnull=True).order_by("created_at")
    )
    emails = _in_batches(
        OutgoingEmail.objects.filter(created_at__lt=cutoff)
        .exclude(status=OutgoingEmail.Status.PENDING)
        .order_by("created_at")
    )
    return {"attempts": attempts, "deliveries": deliveries, "messages": messages, "emails": emails}
