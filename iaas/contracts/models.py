"""The outbox: one row per published event and subscribed handler, written in the
publisher's transaction, marked done in the handler's (Spring Modulith's event
publication registry)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class OutboxMessage(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Delivered"
        FAILED = "failed", "Failed (gave up retrying)"

    event_id = models.UUIDField(db_index=True)
    event_type = models.CharField(max_length=100)
    handler = models.CharField(max_length=200)
    payload = models.JSONField()
    wallet_id = models.UUIDField(null=True, blank=True, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    available_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # The request (or task) that published the event: its id follows the event to the
    # consumers it is relayed to, so their log lines name the request that caused them.
    request_id = models.CharField(max_length=64, blank=True, default="", db_default="")

    class Meta:
        verbose_name = "outbox message"
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["event_id", "handler"], name="outbox_one_row_per_handler"),
        ]
        indexes = [
            models.Index(
                fields=["available_at", "id"],
                condition=Q(status="pending"),
                name="outbox_pending_due",
            ),
            # A batch delivery claims one handler's pending rows in wallet order.
            models.Index(
                fields=["handler", "wallet_id", "id"],
                condition=Q(status="pending"),
                name="outbox_pending_by_handler",
            ),
            # What has not been delivered yet (pending or failed) is found without
            # reading the delivered history (reconciliation, invoicing's check).
            models.Index(
                fields=["event_type", "wallet_id"],
                condition=~Q(status="done"),
                name="outbox_undelivered",
            ),
            # purge_outbox deletes the oldest delivered rows batch by batch from this
            # index, never by scanning the table.
            models.Index(
                fields=["delivered_at", "id"],
                condition=Q(status="done"),
                name="outbox_delivered",
            ),
        ]
        permissions = [("retry_outboxmessage", "Can retry event deliveries")]

    def __str__(self) -> str:
        return f"{self.event_type} -> {self.handler} ({self.status})"


class InboxRecord(models.Model):
    """What a consumer outside the money transaction (a relayed subscription, on any
    host) has applied: one row per consumer and event, written in the consumer's own
    transaction together with its effect. The relay may deliver an event twice (it
    publishes, then marks the outbox row in a transaction of its own); the second
    delivery finds the record and does nothing."""

    consumer = models.CharField(max_length=200)  # the subscription's name
    event_id = models.UUIDField()
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "inbox record"
        constraints = [
            models.UniqueConstraint(fields=["consumer", "event_id"], name="inbox_one_per_consumer_event"),
        ]
        indexes = [models.Index(fields=["received_at", "id"], name="inbox_by_age")]

    def __str__(self) -> str:
        return f"{self.consumer} applied {self.event_id}"
