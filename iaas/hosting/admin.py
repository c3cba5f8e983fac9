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
    list_filter = ("is_active", "currency")
    search_fields = ("id", "name")
    ordering = ("price_per_month", "id")

    price_per_month_money = money_column("price_per_month", "per month")


@admin.register(Subscription)
class SubscriptionAdmin(SoldServiceAdmin):
    """Subscriptions. Who may lift which suspension, and what a resume charges:

    - "Suspend (operator hold)": the operator's own cause, with a reason; nothing
      cancels a held subscription, and no batch run lifts the hold.
    - "Lift the operator hold": clears that cause only. One also unpaid (or on a blocked
      wallet) stays suspended, and renew_subscriptions resumes it once the wallet pays.
    - "Resume, charging what is owed": lifts every cause. Inside the paid period nothing
      is charged and the period is kept; after it ended, a new month from now is charged
      (never the months it was off). A wallet that cannot pay refuses it, and nothing
      changes.
    """

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
    actions = ("suspend_subscriptions", "lift_operator_hold", "resume_subscriptions", "cancel_subscriptions")
    object_actions = (
        ("suspend_subscriptions", "Suspend (operator hold)"),
        ("lift_operator_hold", "Lift the operator hold"),
        ("resume_subscriptions", "Resume, charging what is owed"),
        ("cancel_subscriptions", "Cancel"),
    )

    @admin.action(description="Suspend the selected subscriptions (operator hold)", permissions=["operate"])
    def suspend_subscriptions(self, request, queryset):
        if response := self.confirm(
            request,
            queryset,
            title="Suspend subscriptions",
            warning="The subscriptions below stop until an operator lifts the hold. No batch run "
            "lifts it, and nothing cancels a held subscription. The customer sees the cause, "
            "not the reason.",
            reason_label="Reason (kept with the suspension)",
        ):
            return response
        reason = f"{self.confirmed_reason(request)} ({self.operator_reason(request)})"
        return self.run_service(
            request,
            queryset,
            lambda sub: services.subscription_suspend(
                subscription_id=sub.pk, reason=reason, actor_id=request.user.pk
            ),
            done="Suspended",
        )

    @admin.action(description="Lift the operator hold of the selected subscriptions", permissions=["operate"])
    def lift_operator_hold(self, request, queryset):
        return self.run_service(
            request,
            queryset,
            lambda sub: services.subscription_lift_operator_hold(
                subscription_id=sub.pk, actor_id=request.user.pk
            ),
            done="Operator hold lifted",
        )

    @admin.action(
        description="Resume the selected subscriptions, charging what is owed (lifts every cause)",
        permissions=["operate"],
    )
    def resume_subscriptions(self, request, queryset):
        return self.run_service(
            request,
            queryset,
            lambda sub: services.subscription_resume(subscription_id=sub.pk, actor_id=request.user.pk),
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
        reason = self.operator_reason(request)
        return self.run_service(
            request,
            queryset,
            lambda sub: services.subscription_cancel(subscription_id=sub.pk, reason=reason),
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
