"""Cloud's tables: the server catalog, servers, and Cloud's allowance, charges and
releases (the shared spending tables from iaas.spending)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from iaas.spending.models import (
    AbstractAllowance,
    AbstractCharge,
    AbstractRelease,
    AbstractSuspendable,
    AbstractUsage,
)


class ServerPlan(models.Model):
    id = models.SlugField(primary_key=True, max_length=50)
    name = models.CharField(max_length=100)
    vcpus = models.PositiveSmallIntegerField()
    memory_mb = models.PositiveIntegerField()
    disk_gb = models.PositiveIntegerField()
    price_per_hour = models.BigIntegerField(
        help_text="Minor units per started hour. A new price applies from the next hour charged."
    )
    monthly_cap = models.BigIntegerField(help_text="Most a server of this plan costs in a calendar month.")
    currency = models.CharField(max_length=3, default="EUR")
    is_active = models.BooleanField(default=True, help_text="Offered for new servers.")

    class Meta:
        ordering = ["price_per_hour", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(price_per_hour__gt=0), name="server_plan_price_positive"),
            models.CheckConstraint(
                condition=Q(monthly_cap__gte=models.F("price_per_hour")),
                name="server_plan_cap_covers_an_hour",
            ),
        ]

    def __str__(self) -> str:
        return self.id


class Server(AbstractSuspendable):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        TERMINATED = "terminated", "Terminated"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="servers")
    wallet_id = models.UUIDField(db_index=True)
    name = models.CharField(max_length=63)
    plan = models.ForeignKey(ServerPlan, on_delete=models.PROTECT, related_name="servers")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)
    paid_until = models.DateTimeField()
    # When the server stopped running (the first cause); the causes are in
    # AbstractSuspendable's columns.
    suspended_at = models.DateTimeField(null=True, blank=True)
    terminated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]
        constraints = AbstractSuspendable.causes_constraints("server")
        indexes = [
            models.Index(fields=["status", "paid_until"], name="server_status_paid_until"),
            # Metering walks a partition of wallets with a keyset on (wallet, server).
            models.Index(
                fields=["wallet_id", "id"], condition=~Q(status="terminated"), name="server_wallet_keyset"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Allowance(AbstractAllowance):
    class Meta(AbstractAllowance.Meta):
        verbose_name = "cloud allowance"


class Charge(AbstractCharge):
    class Meta(AbstractCharge.Meta):
        verbose_name = "cloud charge"


class Release(AbstractRelease):
    class Meta(AbstractRelease.Meta):
        verbose_name = "cloud release"


class Usage(AbstractUsage):
    """A server's hours in one calendar month (see AbstractUsage)."""

    class Meta(AbstractUsage.Meta):
        verbose_name = "server usage"
        verbose_name_plural = "server usage"
