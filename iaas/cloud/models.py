"""Cloud's tables: the server catalog, servers, and Cloud's allowance, charges and
releases (the shared spending tables from iaas.spending)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from iaas.spending.models import (
    AbstractAllowance,
    AbstractCharge,
    AbstractMeteredService,
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


class Server(AbstractMeteredService):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        TERMINATED = "terminated", "Terminated"

    plan = models.ForeignKey(ServerPlan, on_delete=models.PROTECT, related_name="servers")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    terminated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]
        constraints = AbstractSuspendable.causes_constraints("server")
        indexes = AbstractMeteredService.metering_indexes("server", ended_status="terminated")


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
