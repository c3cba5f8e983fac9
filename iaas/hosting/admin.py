"""Hosting in the operator console: the hosting catalog, subscriptions, and Hosting's
allowance, charges and releases (read-only). Operators suspend, resume and cancel
subscriptions through Hosting's services, never by editing the status field."""

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
from .models import Allowance, Charge, HostingPlan, Release, Subscription


class HostingPlanForm(CatalogPlanForm):
    class Meta:
        model = HostingPlan
        fields = ("id", "name", "storage_gb", "price_per_month", "currency", "is_active")


@admin.register(HostingPlan)
class HostingPlanAdmin(CatalogAdmin):
    """The catalog. Prices are integer minor units; a new price applies to periods not
    yet charged. Plans are retired (``is_active``), never deleted."""

    form = HostingPlanForm
    list_display = ("id", "name", "storage_gb", "price_per_month_money", "is_active")
    list_filter = ("is_active", "currency")
    search_fields = ("id", "name")
    ordering = ("price_per_month", "id")

    price_per_month_money = money_column("price_per_month", "per month")


@admin.register(Subscription)
class SubscriptionAdmin(SoldServiceAdmin):
    list_display = ("domain", "owner_column", "plan", "status", "current_period_end", "wallet", "created_at")
    list_filter = ("status", "plan", "created_at", "current_period_end")
    search_fields = ("domain", "owner__username", "owner__email", "wallet_id", "id")
    search_help_text = "Domain, customer username or email, wallet id or subscription id."
    list_select_related = ("owner", "plan")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = (
        "id",
        "domain",
        "owner_column",
        "wallet",
        "plan",
        "status",
        "created_at",
        "current_period_end",
        "suspended_at",
        "cancelled_at",
        "related",
    )
    fields = readonly_fields
    operate_permission = "hosting.change_subscription"
    actions = ("suspend_subscriptions", "resume_subscriptions", "cancel_subscriptions")
    object_actions = (
        ("suspend_subscriptions", "Suspend"),
        ("resume_subscriptions", "Unsuspend"),
        ("cancel_subscriptions", "Cancel"),
    )

    @admin.action(description="Suspend the selected subscriptions", permissions=["operate"])
    def suspend_subscriptions(self, request, queryset):
        reason = self.operator_reason(request)
        return self.run_service(
            request,
            queryset,
            lambda sub: services.subscription_suspend(subscription_id=sub.pk, reason=reason),
            done="Suspended",
        )

    @admin.action(description="Unsuspend (resume) the selected subscriptions", permissions=["operate"])
    def resume_subscriptions(self, request, queryset):
        return self.run_service(
            request,
            queryset,
            lambda sub: services.subscription_resume(subscription_id=sub.pk),
            done="Resumed",
        )

    @admin.action(description="Cancel the selected subscriptions", permissions=["operate"])
    def cancel_subscriptions(self, request, queryset):
        if response := self.confirm(
            request,
            queryset,
            title="Cancel subscriptions",
            warning="The subscriptions below are cancelled: they run to the end of the paid period "
            "and are not renewed. The domain becomes free for another subscription.",
        ):
            return response
        return self.run_service(
            request,
            queryset,
            lambda sub: services.subscription_cancel(subscription_id=sub.pk),
            done="Cancelled",
        )


@admin.register(Allowance)
class HostingAllowanceAdmin(AllowanceAdmin):
    pass


@admin.register(Charge)
class HostingChargeAdmin(ChargeAdmin):
    subject_model = "subscription"


@admin.register(Release)
class HostingReleaseAdmin(ReleaseAdmin):
    pass
