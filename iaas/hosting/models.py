"""Hosting's tables: the hosting catalog, subscriptions, and Hosting's allowance,
charges and releases (the shared spending tables from iaas.spending)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from iaas.spending.models import AbstractAllowance, AbstractCharge, AbstractRelease, AbstractSuspendable


class HostingPlan(models.Model):
    id = models.SlugField(primary_key=True, max_length=50)
    name = models.CharField(max_length=100)
    storage_gb = models.PositiveIntegerField()
    price_per_month = models.BigIntegerField(
        help_text="Minor units per month. A new price applies from the next month charged."
    )
    currency = models.CharField(max_length=3, default="EUR")
    is_active = models.BooleanField(default=True, help_text="Offered for new subscriptions.")

    class Meta:
        ordering = ["price_per_month", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(price_per_month__gt=0), name="hosting_plan_price_positive"),
        ]

    def __str__(self) -> str:
        return self.id


class Subscription(AbstractSuspendable):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        CANCELLED = "cancelled", "Cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="subscriptions"
    )
    wallet_id = models.UUIDField(db_index=True)
    domain = models.CharField(max_length=253)
    plan = models.ForeignKey(HostingPlan, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)
    current_period_end = models.DateTimeField()
    # Periods run month by month from this instant (the purchase, or a resumption after
    # the paid period ended), so a subscription bought on the 31st renews on the last day
    # of short months and on the 31st again after them.
    period_anchor = models.DateTimeField(default=timezone.now)
    suspended_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]
        constraints = [
            # One live subscription per domain; a cancelled one frees it.
            models.UniqueConstraint(
                fields=["domain"],
                condition=Q(status__in=["active", "suspended"]),
                name="subscription_domain_unique_while_live",
            ),
            models.CheckConstraint(
                condition=Q(domain=models.functions.Lower("domain")),
                name="subscription_domain_lower",
            ),
            *AbstractSuspendable.causes_constraints("subscription"),
        ]
        indexes = [models.Index(fields=["status", "current_period_end"], name="subscription_status_period")]

    def __str__(self) -> str:
        return self.domain


class Allowance(AbstractAllowance):
    class Meta(AbstractAllowance.Meta):
        verbose_name = "hosting allowance"


class Charge(AbstractCharge):
    class Meta(AbstractCharge.Meta):
        verbose_name = "hosting charge"


class Release(AbstractRelease):
    class Meta(AbstractRelease.Meta):
        verbose_name = "hosting release"
