"""Cloud in the operator console: the server catalog, servers, and Cloud's allowance,
charges and releases (read-only). Operators suspend, resume and terminate servers
through Cloud's services, never by editing the status field, so charges, allowances
and events stay right."""

from __future__ import annotations

from django.contrib import admin

from iaas.common.admin import (
    AllowanceAdmin,
    CatalogAdmin,
    CatalogPlanForm,
    ChargeAdmin,
    ReleaseAdmin,
    SoldServiceAdmin,
    money_column,
)

from . import services
from .models import Allowance, Charge, Release, Server, ServerPlan


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
    list_filter = ("is_active", "currency")
    search_fields = ("id", "name")
    ordering = ("price_per_hour", "id")

    price_per_hour_money = money_column("price_per_hour", "per hour")
    monthly_cap_money = money_column("monthly_cap", "monthly cap")


@admin.register(Server)
class ServerAdmin(SoldServiceAdmin):
    list_display = ("name", "owner_column", "plan", "status", "paid_until", "wallet", "created_at")
    list_filter = ("status", "plan", "created_at", "paid_until")
    search_fields = ("name", "owner__username", "owner__email", "wallet_id", "id")
    search_help_text = "Server name, customer username or email, wallet id or server id."
    list_select_related = ("owner", "plan")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = (
        "id",
        "name",
        "owner_column",
        "wallet",
        "plan",
        "status",
        "created_at",
        "paid_until",
        "suspended_at",
        "terminated_at",
        "related",
    )
    fields = readonly_fields
    operate_permission = "cloud.change_server"
    actions = ("suspend_servers", "resume_servers", "terminate_servers")
    object_actions = (
        ("suspend_servers", "Suspend"),
        ("resume_servers", "Unsuspend"),
        ("terminate_servers", "Terminate"),
    )

    @admin.action(description="Suspend the selected servers", permissions=["operate"])
    def suspend_servers(self, request, queryset):
        reason = self.operator_reason(request)
        return self.run_service(
            request,
            queryset,
            lambda server: services.server_suspend(server_id=server.pk, reason=reason),
            done="Suspended",
        )

    @admin.action(description="Unsuspend (resume) the selected servers", permissions=["operate"])
    def resume_servers(self, request, queryset):
        return self.run_service(
            request, queryset, lambda server: services.server_resume(server_id=server.pk), done="Resumed"
        )

    @admin.action(description="Terminate the selected servers", permissions=["operate"])
    def terminate_servers(self, request, queryset):
        if response := self.confirm(
            request,
            queryset,
            title="Terminate servers",
            warning="The servers below are terminated for good. The time already paid is not refunded.",
        ):
            return response
        reason = self.operator_reason(request)
        return self.run_service(
            request,
            queryset,
            lambda server: services.server_terminate(server_id=server.pk, reason=reason),
            done="Terminated",
        )


@admin.register(Allowance)
class CloudAllowanceAdmin(AllowanceAdmin):
    pass


@admin.register(Charge)
class CloudChargeAdmin(ChargeAdmin):
    subject_model = "server"


@admin.register(Release)
class CloudReleaseAdmin(ReleaseAdmin):
    pass
