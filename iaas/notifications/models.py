"""What the notifications module keeps (ARCHITECTURE.md: webhook endpoints, deliveries
and their attempts, email preferences): the customers' webhook endpoints with their
signing secrets (encrypted: they are used again to sign), each event as it is sent to
customers (its body fixed once, so a redelivery sends the same bytes under the same
``webhook-id``), one delivery per event and endpoint with every attempt, and per
customer the email address to write to, whether it is verified, what they want to hear
about, and the emails queued for sending.

Nothing here points into another context's tables: wallets, services and top-ups appear
by id inside the event bodies only; the customer is the shared kernel (auth.User)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class WebhookEndpoint(models.Model):
    """A URL of the customer's that receives the event types it asks for, signed with
    its secret (Standard Webhooks). After a rotation the previous secret also signs
    until ``previous_secret_expires_at``. ``failing_since`` is the first failed attempt
    since the last success (or since a break in failing longer than the retries'
    longest wait); an endpoint failing for IAAS_WEBHOOK_DISABLE_AFTER_HOURS is disabled
    (``disabled_reason`` says why) and its owner told."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    url = models.CharField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=list)
    enabled = models.BooleanField(default=True)
    secret_encrypted = models.TextField()
    previous_secret_encrypted = models.TextField(blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    failing_since = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["owner", "created_at"], name="notif_endpoint_owner")]

    def __str__(self) -> str:
        return self.url

    def wants(self, event_type: str) -> bool:
        return self.enabled and event_type in self.event_types


class WebhookMessage(models.Model):
    """One event as customers receive it: ``id`` is the event's id, the body's ``id``
    and the ``webhook-id`` header, the same on every endpoint and every attempt."""

    id = models.UUIDField(primary_key=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    event_type = models.CharField(max_length=64)
    occurred_at = models.DateTimeField()
    # The exact bytes every attempt sends (and signs): JSON text, fixed when the message
    # is made (a JSON column would not keep the keys' order).
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"{self.event_type} {self.id}"


class WebhookDelivery(models.Model):
    """A message on its way to one endpoint: pending until an attempt gets a 2xx
    (succeeded) or retries run out (failed). A sender claims it for a lease
    (``claimed_until``) outside any transaction that holds it; a sender that dies
    leaves it to the next one after the lease, which sends the same message again."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    message = models.ForeignKey(WebhookMessage, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    # Copied from the message and the endpoint, for the customers' filters.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    event_type = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    # Retries run for IAAS_WEBHOOK_RETRY_FOR from here (reset by a redelivery).
    retry_window_start = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    succeeded_at = models.DateTimeField(null=True, blank=True)
    redeliveries = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "endpoint"], name="notif_delivery_once_per_endpoint"),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"], name="notif_delivery_due", condition=Q(status="pending")
            ),
            models.Index(fields=["owner", "created_at"], name="notif_delivery_owner"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.endpoint.url}"


class WebhookAttempt(models.Model):
    """One HTTP attempt of a delivery: what came back (status, a short excerpt) or why
    nothing did, and how long it took. Purged after IAAS_WEBHOOK_ATTEMPT_RETENTION_DAYS."""

    id = models.BigAutoField(primary_key=True)
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_set")
    number = models.PositiveIntegerField()
    attempted_at = models.DateTimeField(default=timezone.now, db_index=True)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=500, blank=True)
    response_excerpt = models.CharField(max_length=1000, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-attempted_at", "-id"]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"


class EmailSettings(models.Model):
    """Where and about what a customer is written to. The address is the one given at
    registration (or changed later); nothing but the verification link goes to it
    until it is verified. Made on first use for customers from before this table."""

    owner = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, primary_key=True, related_name="+"
    )
    address = models.EmailField(blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    verification_sent_at = models.DateTimeField(null=True, blank=True)
    low_balance = models.BooleanField(default=True)
    services = models.BooleanField(default=True)  # suspended, ends soon, ended
    payments = models.BooleanField(default=True)  # top-ups succeeded or failed, refunds
    invoices = models.BooleanField(default=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "email settings"

    def __str__(self) -> str:
        return self.address or f"customer {self.owner_id}"


class OutgoingEmail(models.Model):
    """An email composed and waiting to be sent (or sent): one per customer, kind and
    event (a duplicate event composes nothing), sent by the same sender loop as the
    webhooks, retried with backoff, given up after IAAS_EMAIL_MAX_ATTEMPTS."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=40)
    event_id = models.UUIDField(null=True, blank=True)
    to = models.EmailField()
    subject = models.CharField(max_length=200)
    text = models.TextField()
    html = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "kind", "event_id"], name="notif_email_once_per_event"),
        ]
        indexes = [
            models.Index(fields=["next_attempt_at"], name="notif_email_due", condition=Q(status="pending")),
        ]

    def __str__(self) -> str:
        return f"{self.kind} to {self.to}"
