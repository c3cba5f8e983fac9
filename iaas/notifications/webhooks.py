"""Customers' webhooks: endpoints (services), messages and deliveries, Standard
Webhooks signatures, and what an attempt's outcome does (retry with exponential backoff
and jitter for IAAS_WEBHOOK_RETRY_FOR_HOURS, then give up; an endpoint failing for
IAAS_WEBHOOK_DISABLE_AFTER_HOURS is disabled and its owner emailed).

Nothing here sends: the sender (iaas.notifications.sender) claims due deliveries, calls
``request_for`` and iaas.common.outgoing outside any transaction, and hands the outcome
to ``attempt_record``."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from iaas.common import outgoing
from iaas.contracts.errors import DomainError
from iaas.contracts.events import Event

from . import catalog, emails, locks, secrets
from .backoff import jittered_backoff
from .models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookMessage

logger = logging.getLogger(__name__)

USER_AGENT = "iaas-webhooks/1 (+https://www.standardwebhooks.com/)"
MAX_RETRY_SECONDS = 12 * 3600


class EndpointNotFound(DomainError):
    code = "not_found"
    default_detail = "No such webhook endpoint."


class DeliveryNotFound(DomainError):
    code = "not_found"
    default_detail = "No such webhook delivery."


class TooManyEndpoints(DomainError):
    code = "invalid_state"
    default_detail = "This account has as many webhook endpoints as it may have."


# --- Endpoints ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once, in the answer to the POST


def endpoint_create(
    *, owner_id: int, url: str, event_types: list[str], enabled: bool = True, description: str = ""
) -> CreatedEndpoint:
    """A new endpoint and its signing secret (returned once: only its encryption is kept).
    ``url`` must pass iaas.common.outgoing.check_url (UnsafeURL otherwise)."""
    outgoing.check_url(url)
    secret = secrets.new_webhook_secret()
    with transaction.atomic():
        if (
            WebhookEndpoint.objects.filter(owner_id=owner_id).count()
            >= settings.IAAS_WEBHOOK_ENDPOINTS_PER_CUSTOMER
        ):
            raise TooManyEndpoints()
        endpoint = WebhookEndpoint.objects.create(
            owner_id=owner_id,
            url=url,
            event_types=sorted(set(event_types)),
            enabled=enabled,
            description=description,
            secret_encrypted=secrets.encrypt(secret),
        )
    return CreatedEndpoint(endpoint=endpoint, secret=secret)


def _owned_endpoint(*, owner_id: int, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    """The owner's endpoint, locked (another customer's is a 404)."""
    endpoint = locks.endpoint_lock(endpoint_id, owner_id=owner_id)
    if endpoint is None:
        raise EndpointNotFound()
    return endpoint


def endpoint_update(*, owner_id: int, endpoint_id: uuid.UUID, **changes) -> WebhookEndpoint:
    """Change an endpoint's url, event_types, description or enabled. Enabling one that
    was disabled for failing clears the failure, so it gets a fresh five days."""
    if "url" in changes:
        outgoing.check_url(changes["url"])
    with transaction.atomic():
        endpoint = _owned_endpoint(owner_id=owner_id, endpoint_id=endpoint_id)
        for name in ("url", "description", "enabled"):
            if name in changes:
                setattr(endpoint, name, changes[name])
        if "event_types" in changes:
            endpoint.event_types = sorted(set(changes["event_types"]))
        if changes.get("enabled"):
            endpoint.disabled_at, endpoint.disabled_reason = None, ""
            endpoint.failing_since = endpoint.last_failure_at = None
        endpoint.updated_at = timezone.now()
        endpoint.save()
    return endpoint


def endpoint_delete(*, owner_id: int, endpoint_id: uuid.UUID) -> None:
    """Delete an endpoint, its deliveries and their attempts (nothing more is sent to it)."""
    with transaction.atomic():
        _owned_endpoint(owner_id=owner_id, endpoint_id=endpoint_id).delete()


def endpoint_rotate_secret(*, owner_id: int, endpoint_id: uuid.UUID) -> CreatedEndpoint:
    """A new secret; the current one keeps signing beside it for
    IAAS_WEBHOOK_PREVIOUS_SECRET_HOURS, so the receiver can switch without losing a
    message (a rotation inside that window replaces the older one)."""
    secret = secrets.new_webhook_secret()
    with transaction.atomic():
        endpoint = _owned_endpoint(owner_id=owner_id, endpoint_id=endpoint_id)
        now = timezone.now()
        endpoint.previous_secret_encrypted = endpoint.secret_encrypted
        endpoint.previous_secret_expires_at = now + dt.timedelta(
            hours=settings.IAAS_WEBHOOK_PREVIOUS_SECRET_HOURS
        )
        endpoint.secret_encrypted = secrets.encrypt(secret)
        endpoint.updated_at = now
        endpoint.save()
    return CreatedEndpoint(endpoint=endpoint, secret=secret)


def signing_secrets(endpoint: WebhookEndpoint, *, now: dt.datetime) -> list[str]:
    """The secrets that sign a message now: the current one, and the previous one while
    it is still valid after a rotation."""
    found = [secrets.decrypt(endpoint.secret_encrypted)]
    if (
        endpoint.previous_secret_encrypted
        and endpoint.previous_secret_expires_at
        and now < endpoint.previous_secret_expires_at
    ):
        found.append(secrets.decrypt(endpoint.previous_secret_encrypted))
    return found


# --- Messages and deliveries --------------------------------------------------------------


def body_text(body: dict) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def message_queue(*, event_type: catalog.EventType, event: Event, owner_id: int) -> int:
    """Fix the event's message and queue a delivery to each of the owner's endpoints
    that want its type (in the inbox transaction: applied once). Returns how many."""
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(owner_id=owner_id, enabled=True)
        if event_type.name in endpoint.event_types
    ]
    if not endpoints:
        return 0
    message, _ = WebhookMessage.objects.get_or_create(
        id=event.event_id,
        defaults={
            "owner_id": owner_id,
            "event_type": event_type.name,
            "occurred_at": event.occurred_at,
            "body": body_text(catalog.body(event_type, event)),
        },
    )
    now = timezone.now()
    WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                message=message,
                endpoint=endpoint,
                owner_id=owner_id,
                event_type=event_type.name,
                next_attempt_at=now,
                retry_window_start=now,
            )
            for endpoint in endpoints
        ],
        ignore_conflicts=True,
    )
    return len(endpoints)


@dataclass(frozen=True)
class Request:
    """One attempt's request, built before the network call (no database after)."""

    delivery_id: uuid.UUID
    url: str
    body: bytes
    headers: dict[str, str]


def request_for(delivery: WebhookDelivery, *, now: dt.datetime | None = None) -> Request:
    """The signed request of an attempt (Standard Webhooks): ``webhook-id`` is the
    message's id on every attempt, ``webhook-timestamp`` the attempt's moment, and
    ``webhook-signature`` one ``v1,<base64 HMAC-SHA256>`` per valid secret."""
    now = now or timezone.now()
    message, endpoint = delivery.message, delivery.endpoint
    msg_id = str(message.id)
    timestamp = now.astimezone(dt.UTC)
    signatures = " ".join(
        Webhook(secret).sign(msg_id=msg_id, timestamp=timestamp, data=message.body)
        for secret in signing_secrets(endpoint, now=now)
    )
    return Request(
        delivery_id=delivery.id,
        url=endpoint.url,
        body=message.body.encode(),
        headers={
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
            "webhook-signature": signatures,
        },
    )


def retry_delay(attempts: int) -> dt.timedelta:
    """After the ``attempts``-th failure: 30 s, 2 min, 8 min, 32 min, ... times four each
    time, at most 12 hours, each with ±20% jitter (so endpoints that failed together do
    not all come back at once)."""
    return jittered_backoff(attempts, first=settings.IAAS_WEBHOOK_FIRST_RETRY_SECONDS, cap=MAX_RETRY_SECONDS)


@dataclass(frozen=True)
class Outcome:
    status_code: int | None = None
    duration_ms: int = 0
    error: str = ""
    response_excerpt: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def attempt_record(
    *, delivery_id: uuid.UUID, outcome: Outcome, claimed_until: dt.datetime
) -> WebhookDelivery | None:
    """Record an attempt and what follows from it, in one transaction: a 2xx succeeds
    the delivery and clears the endpoint's failure; anything else schedules the next try
    (or gives up after the retry window) and may disable the endpoint. Only the sender
    that holds the claim records (a sender that outlived its lease finds it taken, and
    its outcome is kept as an attempt only); a success is never overwritten."""
    now = timezone.now()
    with transaction.atomic():
        delivery = locks.delivery_lock(delivery_id)
        if delivery is None:  # the endpoint was deleted meanwhile
            return None
        number = delivery.attempts + 1
        ours = delivery.claimed_until == claimed_until and delivery.status == WebhookDelivery.Status.PENDING
        next_attempt_at = None
        if ours:
            delivery.attempts = number
            delivery.last_attempt_at = now
            delivery.last_status_code = outcome.status_code
            delivery.last_error = outcome.error[:500]
            delivery.claimed_until = None
            if outcome.succeeded:
                delivery.status = WebhookDelivery.Status.SUCCEEDED
                delivery.succeeded_at = now
                delivery.next_attempt_at = None
            elif now - delivery.retry_window_start >= dt.timedelta(
                hours=settings.IAAS_WEBHOOK_RETRY_FOR_HOURS
            ):
                delivery.status = WebhookDelivery.Status.FAILED
                delivery.next_attempt_at = None
            else:
                next_attempt_at = now + retry_delay(number)
                delivery.next_attempt_at = next_attempt_at
            delivery.save()
            _endpoint_outcome(delivery.endpoint_id, succeeded=outcome.succeeded, now=now)
        WebhookAttempt.objects.create(
            delivery_id=delivery.pk,
            number=number,
            attempted_at=now,
            status_code=outcome.status_code,
            duration_ms=outcome.duration_ms,
            error=outcome.error[:500],
            response_excerpt=outcome.response_excerpt[:1000],
            next_attempt_at=next_attempt_at,
        )
    return delivery


# Failures further apart than this are not one outage: the longest wait between two
# retries (12 hours and its jitter), with room. An endpoint that failed weeks ago and
# fails once today starts a new count, so only failure without a break disables it.
FAILURE_BREAK = dt.timedelta(seconds=MAX_RETRY_SECONDS * 1.2) + dt.timedelta(hours=1)


def _endpoint_outcome(endpoint_id: uuid.UUID, *, succeeded: bool, now: dt.datetime) -> None:
    """A success clears the endpoint's failure; a failure extends it, or starts a new one
    after a break, and disables the endpoint (its owner told) once every attempt failed
    for IAAS_WEBHOOK_DISABLE_AFTER_HOURS."""
    endpoint = locks.endpoint_lock(endpoint_id)
    if succeeded:
        if endpoint.failing_since is not None:
            endpoint.failing_since = endpoint.last_failure_at = None
            endpoint.save(update_fields=["failing_since", "last_failure_at"])
        return
    if (
        endpoint.failing_since is None
        or endpoint.last_failure_at is None
        or now - endpoint.last_failure_at > FAILURE_BREAK
    ):
        endpoint.failing_since = now
    endpoint.last_failure_at = now
    endpoint.save(update_fields=["failing_since", "last_failure_at"])
    failing_for = now - endpoint.failing_since
    if endpoint.enabled and failing_for >= dt.timedelta(hours=settings.IAAS_WEBHOOK_DISABLE_AFTER_HOURS):
        endpoint.enabled = False
        endpoint.disabled_at = now
        endpoint.disabled_reason = (
            f"Every attempt failed for {failing_for.days} days "
            f"(since {endpoint.failing_since:%Y-%m-%d %H:%M} UTC)."
        )
        endpoint.save(update_fields=["enabled", "disabled_at", "disabled_reason"])
        logger.warning("webhook endpoint %s disabled: failing since %s", endpoint.pk, endpoint.failing_since)
        emails.queue_endpoint_disabled(endpoint)


def delivery_redeliver(*, owner_id: int, delivery_id: uuid.UUID) -> WebhookDelivery:
    """Send a delivery again, the same message under the same ``webhook-id``, now and
    with a fresh retry window (a succeeded or failed one as much as a pending one). An
    endpoint that is disabled gets it once it is enabled again."""
    now = timezone.now()
    with transaction.atomic():
        delivery = locks.delivery_lock(delivery_id, owner_id=owner_id)
        if delivery is None:
            raise DeliveryNotFound()
        delivery.status = WebhookDelivery.Status.PENDING
        delivery.next_attempt_at = now
        delivery.retry_window_start = now
        delivery.claimed_until = None
        delivery.redeliveries += 1
        delivery.save()
    return delivery
