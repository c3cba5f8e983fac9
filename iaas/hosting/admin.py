"""Hosting in the operator console: the hosting catalog, subscriptions, and Hosting's
allowance, charges and releases (read-only). Operators suspend, resume and cancel
subscriptions through Hosting's services, never by editing the status field."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin

from iaas.common.admin import (
    AllowanceAdmin,
    ChargeAdmin,
    OperatorAdmin,
    ReadOnlyAdmin,
    ReleaseAdmin,
    admin_url,
    links_list,
    money_column,
    user_link,
    wallet_link,
)

from . import services
from .models import Allowance, Charge, HostingPlan, Release, Subscription


class HostingPlanForm(forms.ModelForm):
    currency = forms.ChoiceField(choices=[])

    class Meta:
        model = HostingPlan
        fields = ("id", "name", "storage_gb", "price_per_month", "currency", "is_active")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["currency"].choices = [(c, c) for c in settings.IAAS_SUPPORTED_CURRENCIES]


@admin.register(HostingPlan)
class HostingPlanAdmin(OperatorAdmin):
    """The catalog. Prices are integer minor units; a new price applies to periods not
    yet charged. Plans are retired (``is_active``), never deleted."""

    form = HostingPlanForm
    list_display = ("id", "name", "storage_gb", "price_per_month_money", "is_active")
    list_filter = ("is_active", "currency")
    search_fields = ("id", "name")
    ordering = ("price_per_month", "id")

    price_per_month_money = money_column("price_per_month", "per month")

    def get_readonly_fields(self, request, obj=None):
        return ("id",) if obj is not None else ()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
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
    actions = ("suspend_subscriptions", "resume_subscriptions", "cancel_subscriptions")
    object_actions = (
        ("suspend_subscriptions", "Suspend"),
        ("resume_subscriptions", "Unsuspend"),
        ("cancel_subscriptions", "Cancel"),
    )

    def has_operate_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("hosting.change_subscription")

    @admin.display(description="owner", ordering="owner__username")
    def owner_column(self, obj):
        return user_link(obj.owner)

    @admin.display(description="wallet", ordering="wallet_id")
    def wallet(self, obj):
        return wallet_link(obj.wallet_id, "wallet")

    @admin.display(description="follow the money")
    def related(self, obj):
        return links_list(
            [
                (admin_url("billing_wallet_change", obj.wallet_id), "The customer's wallet"),
                (
                    admin_url("hosting_charge_changelist", query={"subject_id": obj.pk}),
                    "Charges for this subscription",
                ),
                (
                    admin_url("hosting_allowance_changelist", query={"wallet_id": obj.wallet_id}),
                    "Hosting allowance",
                ),
                (
                    admin_url(
                        "contracts_outboxmessage_changelist",
                        query={"wallet_id": obj.wallet_id, "delivery": "all"},
                    ),
                    "Events about the wallet",
                ),
            ]
        )

    @admin.action(description="Suspend the selected subscriptions", permissions=["operate"])
    def suspend_subscriptions(self, request, queryset):
        reason = f"operator:{request.user.get_username()}"
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
