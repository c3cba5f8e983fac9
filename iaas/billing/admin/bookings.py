"""What a ledger entry books besides a charge: top-ups (an operator confirms one when the
payment arrives, or marks it failed; a card top-up shows its payment at the provider,
linked to the provider's dashboard, its refused attempts, the debt it paid and what the
provider took back), adjustments and refunds. Adjustments and refunds are made on the
wallet's and the settled charge's pages; here they are read."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from iaas.common.admin import admin_url, link, money, money_column, table
from iaas.contracts.types import format_minor_units

from .. import services
from ..models import Adjustment, Refund, TopUp
from .payments import provider_link
from .wallets import WalletRowAdmin


@admin.register(TopUp)
class TopUpAdmin(WalletRowAdmin):
    list_display = (
        "created_at",
        "wallet_link",
        "amount_money",
        "status",
        "origin",
        "provider",
        "payment",
        "failed_attempts",
        "completed_at",
    )
    list_filter = ("status", "origin", "provider", "currency", "created_at")
    search_fields = (
        "wallet__owner__username",
        "wallet__owner__email",
        "wallet__id",
        "id",
        "reference",
        "provider_reference",
    )
    search_help_text = (
        "Customer username or email, wallet id, top-up id, its reference, or the provider's payment "
        "id (pi_...)."
    )
    list_select_related = ("wallet__owner",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = (
        "id",
        "wallet_link",
        "amount_money",
        "status",
        "origin",
        "provider",
        "payment",
        "payment_method",
        "reference",
        "failed_attempts",
        "failure_code",
        "failure_message",
        "debt_paid_money",
        "created_at",
        "completed_at",
        "ledger_entry",
        "taken_back",
    )
    fields = readonly_fields
    actions = ("confirm_top_ups", "fail_top_ups")
    object_actions = (("confirm_top_ups", "Confirm payment received"), ("fail_top_ups", "Mark failed"))

    amount_money = money_column("amount", "amount")
    # The part of the credit that paid the wallet's debt (a reversal-kind entry beside it).
    debt_paid_money = money_column("debt_paid", "of which paid debt")

    @admin.display(description="payment at the provider", ordering="provider_reference")
    def payment(self, obj):
        return provider_link(obj.provider, obj.provider_reference)

    # Not "reversals": the admin would take the top-up's reverse accessor for a field.
    @admin.display(description="taken back by the provider")
    def taken_back(self, obj):
        return table(
            ["when", "kind", "reference", "taken back", "from the balance", "left as debt"],
            [
                (
                    link(
                        admin_url("billing_paymentreversal_change", reversal.pk),
                        f"{reversal.created_at:%Y-%m-%d %H:%M}",
                    ),
                    reversal.get_kind_display(),
                    provider_link(reversal.provider, reversal.reference),
                    money(reversal.amount, obj.currency),
                    money(reversal.taken, obj.currency),
                    money(reversal.debt_added, obj.currency),
                )
                for reversal in obj.reversals.order_by("created_at")
            ],
            empty="Nothing.",
        )

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
            request,
            queryset,
            lambda top_up: services.top_up_confirm_by_operator(top_up_id=top_up.pk),
            done="Confirmed",
        )

    @admin.action(description="Mark failed: the payment will not arrive", permissions=["settle"])
    def fail_top_ups(self, request, queryset):
        return self.run_service(
            request,
            queryset,
            # The reason the customer is told (TopUpFailed): never the operator's name.
            lambda top_up: services.top_up_fail_by_operator(top_up_id=top_up.pk, reason="rejected"),
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
