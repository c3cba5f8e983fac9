"""Reads of the notifications module: a customer sees only their own endpoints and
deliveries (another customer's id is a 404, like one that does not exist)."""

from __future__ import annotations

import uuid

from django.db.models import Prefetch, QuerySet

from .models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from .webhooks import DeliveryNotFound, EndpointNotFound

RECENT_ATTEMPTS = 5


def endpoint_list(*, owner_id: int) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(owner_id=owner_id).order_by("-created_at", "id")


def endpoint_get(*, owner_id: int, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    endpoint = endpoint_list(owner_id=owner_id).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise EndpointNotFound()
    return endpoint


def delivery_list(*, owner_id: int) -> QuerySet[WebhookDelivery]:
    """Newest first, each with its latest attempts (one more statement per page)."""
    recent = WebhookAttempt.objects.order_by("-attempted_at", "-id")
    return (
        WebhookDelivery.objects.filter(owner_id=owner_id)
        .select_related("message")
        .prefetch_related(Prefetch("attempt_set", queryset=recent))
        .order_by("-created_at", "-id")
    )


def delivery_get(*, owner_id: int, delivery_id: uuid.UUID) -> WebhookDelivery:
    delivery = delivery_list(owner_id=owner_id).filter(pk=delivery_id).first()
    if delivery is None:
        raise DeliveryNotFound()
    return delivery
