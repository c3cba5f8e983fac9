"""Every row lock the notifications module takes (ARCHITECTURE.md, "Locks": one module
per context). None of these rows is money, and none is locked together with another
context's: an endpoint, a delivery, an email, a customer's email settings, each alone
(a delivery's outcome locks the delivery, then its endpoint), inside the caller's
transaction; a sender's claim skips the rows another sender holds."""

from __future__ import annotations

import uuid

from django.db.models import Q, QuerySet

from .models import EmailSettings, OutgoingEmail, WebhookDelivery, WebhookEndpoint


def endpoint_lock(endpoint_id: uuid.UUID, *, owner_id: int | None = None) -> WebhookEndpoint | None:
    rows = WebhookEndpoint.objects.filter(pk=endpoint_id)
    if owner_id is not None:
        rows = rows.filter(owner_id=owner_id)
    return rows.select_for_update(no_key=True).first()


def delivery_lock(delivery_id: uuid.UUID, *, owner_id: int | None = None) -> WebhookDelivery | None:
    rows = WebhookDelivery.objects.filter(pk=delivery_id)
    if owner_id is not None:
        rows = rows.filter(owner_id=owner_id)
    return rows.select_for_update(no_key=True, of=("self",)).select_related("endpoint").first()


def email_lock(email_id: uuid.UUID) -> OutgoingEmail | None:
    return OutgoingEmail.objects.select_for_update(no_key=True).filter(pk=email_id).first()


def email_settings_lock(owner_id: int) -> EmailSettings | None:
    return EmailSettings.objects.select_for_update(no_key=True).filter(owner_id=owner_id).first()


def due_try_lock(rows: QuerySet, *, now, limit: int) -> list:
    """The ids of up to ``limit`` of ``rows`` (already filtered to what is due) that no
    sender holds a live claim on, most overdue first, locked SKIP LOCKED: concurrent
    senders take different rows, and none waits for another."""
    return list(
        rows.select_for_update(skip_locked=True, no_key=True)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
