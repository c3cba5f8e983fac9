"""Storage's tables: the volume catalog, block volumes, and Storage's allowance, charges,
releases and usage records (the kit's tables, iaas.spending.models)."""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q

from iaas.spending.models import (
    AbstractAllowance,
    AbstractCharge,
    AbstractMeteredService,
    AbstractRelease,
    AbstractSuspendable,
    AbstractUsage,
)

# A GB-month is priced over this many hours (365 days x 24 / 12, as cloud providers
# count a month): a GB-hour costs price_per_gb_month / 730, counted exactly.
HOURS_PER_PRICED_MONTH = 730


class VolumePlan(models.Model):
    id = models.SlugField(primary_key=True, max_length=50)
    name = models.CharField(max_length=100)
    price_per_gb_month = models.BigIntegerField(
        help_text="Minor units per GB and month: accrued hourly (a GB-hour is a 730th), rounded once per "
        "month; a volume's month costs at most a full month at its size. A new price applies from the "
        "next hour accrued."
    )
    min_size_gb = models.PositiveIntegerField()
    max_size_gb = models.PositiveIntegerField()
    currency = models.CharField(max_length=3, default="EUR")
    is_active = models.BooleanField(default=True, help_text="Offered for new volumes.")

    class Meta:
        ordering = ["price_per_gb_month", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(price_per_gb_month__gt=0), name="volume_plan_price_positive"),
            models.CheckConstraint(
                condition=Q(min_size_gb__gt=0, max_size_gb__gte=F("min_size_gb")),
                name="volume_plan_sizes_ordered",
            ),
        ]

    def __str__(self) -> str:
        return self.id


class Volume(AbstractMeteredService):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"
        DELETED = "deleted", "Deleted"

    ENDED_STATUS = "deleted"
    ENDED_AT = "deleted_at"

    plan = models.ForeignKey(VolumePlan, on_delete=models.PROTECT, related_name="volumes")
    size_gb = models.PositiveIntegerField(
        "size (GB)", help_text="Grows only; the bigger size accrues from the resize on."
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "id"]
        constraints = [
            *AbstractSuspendable.causes_constraints("volume"),
            models.CheckConstraint(condition=Q(size_gb__gt=0), name="volume_size_positive"),
        ]
        indexes = AbstractMeteredService.metering_indexes("volume", ended_status="deleted")


class Allowance(AbstractAllowance):
    class Meta(AbstractAllowance.Meta):
        verbose_name = "storage allowance"


class Charge(AbstractCharge):
    class Meta(AbstractCharge.Meta):
        verbose_name = "storage charge"


class Release(AbstractRelease):
    class Meta(AbstractRelease.Meta):
        verbose_name = "storage release"


class Usage(AbstractUsage):
    """A volume's hours in one calendar month, its list price counted in 730ths of a
    minor unit per GB-month (see AbstractUsage)."""

    LIST_DIVISOR = HOURS_PER_PRICED_MONTH

    class Meta(AbstractUsage.Meta):
        verbose_name = "volume usage"
        verbose_name_plural = "volume usage"
