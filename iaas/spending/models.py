"""Abstract tables every selling context has: its allowance per wallet, its charges,
its releases. Cloud and Hosting subclass them; the constraints come along."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone


class AbstractAllowance(models.Model):
    """The part of a wallet Billing reserved for this context and the context has not
    spent or released. Carries the wallet's owner and currency, copied from Billing's
    wallet view on creation: every spend checks both."""

    wallet_id = models.UUIDField(primary_key=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    currency = models.CharField(max_length=3)
    amount = models.BigIntegerField(default=0, editable=False)
    # Running totals for I4: granted = amount + charged + released, held by a CHECK.
    granted_total = models.BigIntegerField(default=0, editable=False)
    charged_total = models.BigIntegerField(default=0, editable=False)
    released_total = models.BigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        abstract = True
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="%(app_label)s_allowance_not_negative"),
            models.CheckConstraint(
                condition=Q(granted_total__gte=0, charged_total__gte=0, released_total__gte=0),
                name="%(app_label)s_allowance_totals_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(granted_total=F("amount") + F("charged_total") + F("released_total")),
                name="%(app_label)s_allowance_totals_add_up",
            ),
        ]

    def __str__(self) -> str:
        return f"allowance {self.amount} {self.currency} on {self.wallet_id}"


class AbstractCharge(models.Model):
    """Money this context spent out of its allowance: a purchase or a period of use.
    Told to Billing by ChargeRecorded, settled there once."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wallet_id = models.UUIDField(db_index=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    description = models.CharField(max_length=255)
    subject_id = models.UUIDField(db_index=True, help_text="The server or subscription paid for.")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    transaction_date = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="%(app_label)s_charge_amount_positive"),
            models.CheckConstraint(
                condition=Q(period_end__gte=F("period_start")),
                name="%(app_label)s_charge_period_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"charge {self.amount} {self.currency}: {self.description}"


class AbstractRelease(models.Model):
    """Allowance this context gave back. Told to Billing by AllowanceReleased."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wallet_id = models.UUIDField(db_index=True)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="%(app_label)s_release_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"release {self.amount} {self.currency} ({self.reason})"
