"""Storage in the operator console: the volume catalog, volumes, and Storage's allowance,
charges, releases and usage (read-only), all from the kit's admin bases. Operators
suspend, resume and delete volumes through the kit's metered-service life, never by
editing a status."""

from __future__ import annotations

from django.contrib import admin

from iaas.common.admin import money_column
from iaas.spending.admin import (
    AllowanceAdmin,
    CatalogAdmin,
    CatalogPlanForm,
    ChargeAdmin,
    MeteredServiceAdmin,
    ReleaseAdmin,
    UsageAdmin,
)

from .models import Allowance, Charge, Release, Usage, Volume, VolumePlan
from .spending import volumes


class VolumePlanForm(CatalogPlanForm):
    class Meta:
        model = VolumePlan
        fields = ("id", "name", "price_per_gb_month", "min_size_gb", "max_size_gb", "currency", "is_active")


@admin.register(VolumePlan)
class VolumePlanAdmin(CatalogAdmin):
    """The catalog. A GB-month's price is integer minor units, accrued hourly as a 730th;
    a new price applies to hours not yet accrued. Plans are retired, never deleted."""

    form = VolumePlanForm
    list_display = ("id", "name", "price_per_gb_month_money", "min_size_gb", "max_size_gb", "is_active")
    ordering = ("price_per_gb_month", "id")

    price_per_gb_month_money = money_column("price_per_gb_month", "per GB-month")


@admin.register(Volume)
class VolumeAdmin(MeteredServiceAdmin):
    """Volumes (the kit's metered-service admin: suspend, lift the hold, resume, delete)."""

    metered = volumes
    end_label, end_done = "Delete", "Deleted"
    extra_columns = ("size_gb",)
    operate_permission = "storage.change_volume"


@admin.register(Allowance)
class StorageAllowanceAdmin(AllowanceAdmin):
    pass


@admin.register(Charge)
class StorageChargeAdmin(ChargeAdmin):
    subject_model = "volume"


@admin.register(Release)
class StorageReleaseAdmin(ReleaseAdmin):
    pass


@admin.register(Usage)
class StorageUsageAdmin(UsageAdmin):
    subject_model = "volume"
