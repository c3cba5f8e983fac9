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
    ReleaseAdmin,
    SoldServiceAdmin,
    SuspensionCausesFilter,
    UsageAdmin,
)

from . import services
from .models import Allowance, Charge, Release, Server, ServerPlan, Usage


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
    """Servers. Who may lift which suspension, and what a resume charges:

    - "Suspend (operator hold)": the operator's own cause, with a reason; nothing
      terminates a held server, and no batch run lifts the hold.
    - "Lift the operator hold": clears that cause only. A server also unpaid (or on a
      blocked wallet) stays suspended, and bill_usage resumes it once the wallet pays.
    - "Resume, charging what is owed": lifts every cause and charges what bill_usage
      would: the hours the server ran unpaid before it stopped, then the hour from now
      unless a paid hour is still running. The suspended time is never charged. A
      wallet that cannot pay refuses it, and nothing changes.
    """

    ends_at = staticmethod(services.server_terminates_at)
    list_display = (
        "name",
        "owner_column",
        "plan",
        "status",
        "causes_column",
        "ends_at_column",
        "paid_until",
        "wallet",
        "created_at",
    )
    list_filter = ("status", SuspensionCausesFilter, "plan", "created_at", "paid_until")
    search_fields = ("name", "owner__username", "owner__email", "wallet_id", "id")
    search_help_text = "Server name, customer username or email, wallet id or server id."
    readonly_fields = (
        "id",
        "name",
        "owner_column",
        "wallet",
        "plan",
        "status",
        "causes_column",
        "ends_at_column",
        "created_at",
        "paid_until",
        "suspended_at",
        "terminated_at",
        "related",
    )
    fields = readonly_fields
    operate_permission = "cloud.change_server"
    actions = ("suspend_servers", "lift_operator_hold", "resume_servers", "terminate_servers")
    object_actions = (
        ("suspend_servers", "Suspend (operator hold)"),
        ("lift_operator_hold", "Lift the operator hold"),
        ("resume_servers", "Resume, charging what is owed"),
        ("terminate_servers", "Terminate"),
    )

    @admin.action(description="Suspend the selected servers (operator hold)", permissions=["operate"])
    def suspend_servers(self, request, queryset):
        if response := self.confirm(
            request,
            queryset,
            title="Suspend servers",
            warning="The servers below stop until an operator lifts the hold. No batch run lifts "
            "it, and nothing terminates a held server. The customer sees the cause, not the reason.",
            reason_label="Reason (kept with the suspension)",
        ):
            return response
        reason = f"{self.confirmed_reason(request)} ({self.operator_reason(request)})"
        return self.run_service(
            request,
            queryset,
            lambda server: services.server_suspend(
                server_id=server.pk, reason=reason, actor_id=request.user.pk
            ),
            done="Suspended",
        )

    @admin.action(description="Lift the operator hold of the selected servers", permissions=["operate"])
    def lift_operator_hold(self, request, queryset):
        return self.run_service(
            request,
            queryset,
            lambda server: services.server_lift_operator_hold(server_id=server.pk, actor_id=request.user.pk),
            done="Operator hold lifted",
        )

    @admin.action(
        description="Resume the selected servers, charging what is owed (lifts every cause)",
        permissions=["operate"],
    )
    def resume_servers(self, request, queryset):
        return self.run_service(
            request,
            queryset,
            lambda server: services.server_resume(server_id=server.pk, actor_id=request.user.pk),
            done="Resumed",
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


@admin.register(Usage)
class CloudUsageAdmin(UsageAdmin):
    subject_model = "server"
