"""Cloud in the operator console: the server catalog, servers, and Cloud's allowance,
charges and releases (read-only). Operators suspend, resume and terminate servers
through Cloud's services, never by editing the status field, so charges, allowances
and events stay right."""

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

from .models import Allowance, Charge, Release, Server, ServerPlan, Usage
from .spending import servers


class ServerPlanForm(CatalogPlanForm):
    class Meta:
        model = ServerPlan
        fields = (
            "id",
            "name",
            "vcpus",
            "memory_mb",
            "disk_gb",
            "price_per_hour",
            "monthly_cap",
            "currency",
            "is_active",
        )


@admin.register(ServerPlan)
class ServerPlanAdmin(CatalogAdmin):
    """The catalog. Prices are integer minor units; a new price applies to hours not yet
    charged. Plans are retired (``is_active``), never deleted: servers point at them."""

    form = ServerPlanForm
    list_display = (
        "id",
        "name",
        "vcpus",
        "memory_mb",
        "disk_gb",
        "price_per_hour_money",
        "monthly_cap_money",
        "is_active",
    )
    ordering = ("price_per_hour", "id")

    price_per_hour_money = money_column("price_per_hour", "per hour")
    monthly_cap_money = money_column("monthly_cap", "monthly cap")


@admin.register(Server)
class ServerAdmin(MeteredServiceAdmin):
    """Servers (the kit's metered-service admin: suspend, lift the hold, resume, terminate)."""

    metered = servers
    operate_permission = "cloud.change_server"


@admin.register(Allowance)
class CloudAllowanceAdmin(AllowanceAdmin):
    pass


@admin.register(Charge)
class CloudChargeAdmin(ChargeAdmin):
    subject_model = "server"


@admin.register(Release)
class CloudReleaseAdmin(ReleaseAdmin):
    pass


@admin.register(Usage)
class CloudUsageAdmin(UsageAdmin):
    subject_model = "server"
