"""Hosting in the operator console: the hosting catalog, subscriptions, and Hosting's
allowance, charges and releases (read-only). Operators suspend, resume and cancel
subscriptions through Hosting's services, never by editing the status field."""

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
    ordering = ("price_per_month", "id")

    price_per_month_money = money_column("price_per_month", "per month")


@admin.register(Subscription)
class SubscriptionAdmin(SoldServiceAdmin):
    """Subscriptions (the kit's operator actions, SoldServiceAdmin, through Hosting's
    services). A resume charges nothing inside the paid period, and the period is kept;
    after it ended, a new month from now is charged (never the months it was off)."""

    ends_at = staticmethod(services.subscription_cancels_at)
    list_display = (
        "domain",
        "owner_column",
        "plan",
        "status",
        "causes_column",
        "ends_at_column",
        "current_period_end",
        "wallet",
        "created_at",
    )
    list_filter = ("status", SuspensionCausesFilter, "plan", "created_at", "current_period_end")
    search_fields = ("domain", "owner__username", "owner__email", "wallet_id", "id")
    search_help_text = "Domain, customer username or email, wallet id or subscription id."
    readonly_fields = (
        "id",
        "domain",
        "owner_column",
        "wallet",
        "plan",
        "status",
        "causes_column",
        "ends_at_column",
        "created_at",
        "current_period_end",
        "suspended_at",
        "cancelled_at",
        "related",
    )
    fields = readonly_fields
    operate_permission = "hosting.change_subscription"
    end_label, end_done = "Cancel", "Cancelled"
    end_warning = (
        "The {plural} below are cancelled: they run to the end of the paid period and are not "
        "renewed. The domain becomes free for another subscription."
    )

    def suspend_one(self, obj, *, reason: str, actor_id: int):
        return services.subscription_suspend(subscription_id=obj.pk, reason=reason, actor_id=actor_id)

    def lift_operator_hold_one(self, obj, *, actor_id: int):
        return services.subscription_lift_operator_hold(subscription_id=obj.pk, actor_id=actor_id)

    def resume_one(self, obj, *, actor_id: int):
        return services.subscription_resume(subscription_id=obj.pk, actor_id=actor_id)

    def end_one(self, obj, *, reason: str):
        return services.subscription_cancel(subscription_id=obj.pk, reason=reason)


@admin.register(Allowance)
class HostingAllowanceAdmin(AllowanceAdmin):
    pass


@admin.register(Charge)
class HostingChargeAdmin(ChargeAdmin):
    subject_model = "subscription"


@admin.register(Release)
class HostingReleaseAdmin(ReleaseAdmin):
    pass
