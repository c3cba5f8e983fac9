"""The operator console's tables: the runs of scheduled jobs and their parts, the task
messages the broker dead-lettered, and the one-time tokens of operator forms that were
used, per row and action. A submission of an admin action claims its token in the
transaction that does the work (``iaas.common.admin.claim_operation_token``), so a
second submission of the same page (a double click, a browser retry) finds it used and
does nothing. Old rows are purged (``purge_operation_tokens``): a token is only worth
keeping as long as a browser might resubmit its page."""

from __future__ import annotations

import datetime as dt
import uuid

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone


class UsedOperationToken(models.Model):
    token = models.UUIDField()
    # What the token was used for: "<app>.<model>:<pk>:<action>".
    target = models.CharField(max_length=255)
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    used_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["token", "target"], name="operations_token_used_once"),
        ]

    def __str__(self) -> str:
        return f"{self.token} for {self.target}"


def token_claim(token: uuid.UUID, target: str, user_id: int | None) -> bool:
    """Record ``token`` as used for ``target`` in the caller's transaction: True, or False
    when it was used before. The unique constraint decides: a concurrent claim of the
    same token waits for the first transaction and then conflicts (or, if the first
    rolled back, succeeds)."""
    try:
        with transaction.atomic():
            UsedOperationToken.objects.create(token=token, target=target[:255], used_by_id=user_id)
    except IntegrityError:
        return False
    return True


def tokens_purge(*, older_than: dt.datetime) -> int:
    deleted, _ = UsedOperationToken.objects.filter(used_at__lt=older_than).delete()
    return deleted


class JobRun(models.Model):
    """One run of a scheduled job (iaas.operations.schedule): started by Celery beat, an
    operator (``run_job``) or cron, fanned out as ``parts`` tasks, one per wallet
    partition (one for a job that is not partitioned). The run is over when every part
    has finished; its duration is from the fan-out to the last part's end, whichever
    hosts ran them."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"  # a part raised, or reported problems (reconcile)

    job = models.CharField(max_length=60)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    parts = models.PositiveIntegerField()
    at = models.DateTimeField(help_text="the moment the run works for (metering's hour, say)")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Who started it: "beat", "operator:<username>", "command".
    started_by = models.CharField(max_length=200, blank=True)
    # The start task's id: a start the broker delivers twice makes one run.
    start_key = models.CharField(max_length=255, unique=True, null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["job", "-started_at"], name="jobrun_latest_per_job")]
        constraints = [models.CheckConstraint(condition=Q(parts__gte=1), name="jobrun_has_parts")]

    def __str__(self) -> str:
        return f"{self.job} at {self.at:%Y-%m-%d %H:%M} ({self.status})"

    @property
    def duration(self) -> dt.timedelta | None:
        return self.finished_at - self.started_at if self.finished_at else None


class JobPart(models.Model):
    """One part of a run: the job's command on one wallet partition. A redelivered task
    finds its part and runs it again (every job is safe to run again); ``attempts``
    counts the deliveries that started it."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        RETRYING = "retrying", "Waiting for its retry"  # raised; tried again after a backoff
        SUCCEEDED = "succeeded", "Succeeded"
        PROBLEMS = "problems", "Finished with problems"  # exit status 1: reported, not retried
        FAILED = "failed", "Failed"  # raised on its last try, or dead-lettered

    run = models.ForeignKey(JobRun, on_delete=models.CASCADE, related_name="part_set")
    index = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    summary = models.JSONField(null=True, blank=True)  # the command's --json output
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="jobpart_one_per_partition"),
        ]

    def __str__(self) -> str:
        return f"{self.run.job} part {self.index + 1}/{self.run.parts} ({self.status})"


class DeadLetter(models.Model):
    """A task message the broker gave up on: rejected after its retries, or redelivered
    past the queue's delivery limit (a worker died on it each time), and moved by the
    dead-letter exchange to the dead-letter queue, from which ``drain_dead_letters``
    copies it here. An operator reads why and retries it (it is published again, as
    it was, to the queue it came from) or discards it."""

    class Status(models.TextChoices):
        DEAD = "dead", "Dead-lettered"
        RETRIED = "retried", "Retried"
        DISCARDED = "discarded", "Discarded"

    # The broker message's id (Celery's task id): a message drained twice (the drain was
    # killed between its commit and its ack) is one row.
    message_id = models.CharField(max_length=255, unique=True)
    task = models.CharField(max_length=255)
    queue = models.CharField(max_length=255, help_text="where it was when it died")
    exchange = models.CharField(max_length=255, blank=True)
    routing_key = models.CharField(max_length=255)
    reason = models.CharField(max_length=40, help_text="RabbitMQ's: rejected, delivery_limit, expired")
    deaths = models.PositiveIntegerField(default=1)
    headers = models.JSONField(default=dict)
    body = models.TextField()
    content_type = models.CharField(max_length=100)
    content_encoding = models.CharField(max_length=40)
    properties = models.JSONField(default=dict)
    dead_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DEAD)
    handled_at = models.DateTimeField(null=True, blank=True)
    handled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    times_retried = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-dead_at", "-id"]
        indexes = [models.Index(fields=["status", "-dead_at"], name="deadletter_by_status")]
        permissions = [("retry_deadletter", "Can retry or discard dead-lettered tasks")]

    def __str__(self) -> str:
        return f"{self.task} ({self.reason}, {self.status})"
