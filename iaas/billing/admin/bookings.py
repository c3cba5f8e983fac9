"""What a ledger entry books besides a charge: top-ups (an operator confirms one when the
payment arrives, or marks it failed), adjustments and refunds. Adjustments and refunds
are made on the wallet's and the settled charge's pages; here they are read."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from iaas.common.admin import link, money_column
from iaas.contracts.types import format_minor_units

from .. import services
from ..models import Adjustment, Refund, TopUp
from .wallets import WalletRowAdmin


@admin.register(TopUp)
class TopUpAdmin(WalletRowAdmin):
    list_display = (
        "created_at",
        "wallet_link",
        "amount_money",
        "status",
        "provider",
        "reference",
        "completed_at",
    )
    list_filter = ("status", "provider", "currency", "created_at")
    search_fields = (
        "wallet__owner__username",
        "wallet__owner__email",
        "wallet__id",
        "id",
        "reference",
        "provider_reference",
    )
    list_select_related = ("wallet__owner",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = (
        "id",
        "wallet_link",
        "amount_money",
        "status",
        "provider",
        "provider_reference",
        "reference",
        "created_at",
        "completed_at",
        "ledger_entry",
    )
    fields = readonly_fields
    actions = ("confirm_top_ups", "fail_top_ups")
    object_actions = (("confirm_top_ups", "Confirm payment received"), ("fail_top_ups", "Mark failed"))

    amount_money = money_column("amount", "amount")

    def has_settle_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("billing.change_topup")

    @admin.action(description="Confirm: the payment arrived (credits the wallet)", permissions=["settle"])
    def confirm_top_ups(self, request, queryset):
        if response := self.confirm(
            request,
            queryset,
            title="Confirm top-ups",
            warning="Each pending top-up below is credited to its wallet. "
            "Do this only when the money arrived.",
        ):
            return response
        return self.run_service(
            request, queryset, lambda top_up: services.top_up_confirm(top_up_id=top_up.pk), done="Confirmed"
        )

    @admin.action(description="Mark failed: the payment will not arrive", permissions=["settle"])
    def fail_top_ups(self, request, queryset):
        return self.run_service(
            request,
            queryset,
            # The reason the customer is told (TopUpFailed): never the operator's name.
            lambda top_up: services.top_up_fail(top_up_id=top_up.pk, reason="rejected"),
            done="Marked failed",
        )


@admin.register(Adjustment)
class AdjustmentAdmin(WalletRowAdmin):
    list_display = ("created_at", "wallet_link", "amount_money", "reason", "created_by")
    list_filter = ("wallet__currency", "created_at")
    search_fields = (
        "wallet__owner__username",
        "wallet__owner__email",
        "wallet__id",
        "reason",
        "created_by__username",
    )
    search_help_text = "Customer username or email, wallet id, reason or operator."
    list_select_related = ("wallet__owner", "created_by")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = ("id", "wallet_link", "amount_money", "reason", "created_by", "created_at", "entry")
    fields = readonly_fields

    amount_money = money_column("amount", "amount", currency="wallet.currency")

    @admin.display(description="ledger entry")
    def entry(self, obj):
        return link(
            reverse("admin:billing_ledgerentry_change", args=[obj.ledger_entry_id]),
            format_html("#{} ({})", obj.ledger_entry.sequence, obj.ledger_entry.description),
        )


@admin.register(Refund)
class RefundAdmin(WalletRowAdmin):
    list_display = ("created_at", "wallet_link", "amount_money", "charge_link", "reason", "created_by")
    list_filter = ("wallet__currency", "created_at")
    search_fields = (
        "wallet__owner__username",
        "wallet__owner__email",
        "wallet__id",
        "reason",
        "created_by__username",
    )
    search_help_text = "Customer username or email, wallet id, reason or operator."
    list_select_related = ("wallet__owner", "created_by", "charge")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = (
        "id",
        "wallet_link",
        "amount_money",
        "charge_link",
        "reason",
        "created_by",
        "created_at",
        "ledger_entry",
    )
    fields = readonly_fields

    amount_money = money_column("amount", "amount", currency="wallet.currency")

    @admin.display(description="charge refunded")
    def charge_link(self, obj):
        charge = obj.charge
        return link(
            reverse("admin:billing_settledcharge_change", args=[charge.pk]),
            format_html("{} ({})", charge.description, format_minor_units(charge.amount, charge.currency)),
        )
