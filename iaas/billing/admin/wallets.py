"""Wallets in the operator console: the wallet page (its money, holds, latest ledger
entries and links to everything about it), its "Adjust balance" page, and freezing.
Also the base of every money table whose rows belong to a wallet, linking back to it."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import F
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from iaas.audit.admin import ChangeHistoryAdmin
from iaas.common.admin import (
    OPERATION_TOKEN,
    ReadOnlyAdmin,
    admin_url,
    link,
    links_list,
    money,
    money_column,
    table,
)
from iaas.contracts import selling, wallets
from iaas.contracts.types import format_minor_units

from .. import services
from ..models import AutoTopUp, Wallet
from .forms import AdjustmentForm, book_from_form, money_form_page, operator_object

RECENT_LEDGER_ENTRIES = 10


def wallet_column(wallet: Wallet) -> str:
    """A wallet in a list: its owner and currency, linking to its page."""
    return link(
        reverse("admin:billing_wallet_change", args=[wallet.pk]),
        f"{wallet.owner.get_username()} · {wallet.currency}",
    )


def wallet_query(wallet_id) -> dict:
    return {"wallet__id__exact": wallet_id}


def auto_top_up_state(auto: AutoTopUp, *, now=None) -> str:
    """An automatic top-up's state, as an operator asks it: waiting for the balance to
    drop, due (being tried, or when the runner tries next), and its refusals in a row."""
    now = now or timezone.now()
    if auto.due_at is None:
        state = "waiting for the balance to drop below the threshold"
    elif auto.claimed_until is not None and auto.claimed_until > now:
        state = f"due since {auto.due_at:%Y-%m-%d %H:%M}, being tried"
    elif auto.next_attempt_at is not None and auto.next_attempt_at > now:
        state = f"due since {auto.due_at:%Y-%m-%d %H:%M}, next attempt {auto.next_attempt_at:%Y-%m-%d %H:%M}"
    else:
        state = f"due since {auto.due_at:%Y-%m-%d %H:%M}"
    if auto.consecutive_failures:
        state += f"; {auto.consecutive_failures} refusal(s) in a row, the last: {auto.last_failure_code}"
    return state


class InDebtFilter(admin.SimpleListFilter):
    """Wallets owing what a payment reversal could not take."""

    title = "debt"
    parameter_name = "in_debt"

    def lookups(self, request, model_admin):
        return [("yes", "In debt"), ("no", "No debt")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(debt__gt=0)
        if self.value() == "no":
            return queryset.filter(debt=0)
        return queryset


class WalletRowAdmin(ReadOnlyAdmin):
    """A money table whose rows belong to a wallet: a wallet column linking to it."""

    @admin.display(description="wallet", ordering="wallet__owner__username")
    def wallet_link(self, obj):
        return wallet_column(obj.wallet)


@admin.register(Wallet)
class WalletAdmin(ChangeHistoryAdmin, ReadOnlyAdmin):
    list_display = (
        "owner_column",
        "currency",
        "status",
        "balance_money",
        "reserved_money",
        "available_money",
        "debt_money",
        "created_at",
    )
    list_display_links = ("owner_column",)
    list_filter = ("status", InDebtFilter, "currency", "created_at")
    search_fields = ("owner__username", "owner__email", "id")
    search_help_text = "Customer username or email, or wallet id."
    list_select_related = ("owner",)
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    fieldsets = (
        (None, {"fields": ("id", "owner_column", "currency", "status", "created_at", "updated_at")}),
        (
            "Money",
            {
                "fields": (
                    "balance_money",
                    "reserved_money",
                    "available_money",
                    "debt_money",
                    "low_balance_money",
                    "holds",
                )
            },
        ),
        ("Card payments", {"fields": ("automatic_top_up", "payment_reversals")}),
        ("Ledger", {"fields": ("recent_ledger",)}),
        ("Follow the money", {"fields": ("related",)}),
    )
    readonly_fields = (
        "id",
        "owner_column",
        "currency",
        "status",
        "created_at",
        "updated_at",
        "balance_money",
        "reserved_money",
        "available_money",
        "debt_money",
        "low_balance_money",
        "holds",
        "automatic_top_up",
        "payment_reversals",
        "recent_ledger",
        "related",
    )
    actions = ("adjust_balance", "freeze_wallets", "unfreeze_wallets")
    object_actions = (("freeze_wallets", "Freeze"), ("unfreeze_wallets", "Unfreeze"))

    balance_money = money_column("balance", "balance")
    reserved_money = money_column("reserved", "reserved")
    available_money = money_column("available", "available", ordering="available_amount")
    # The customer's own setting (PATCH /api/v1/wallets/{id}/): shown, not changed, here.
    low_balance_money = money_column("low_balance_threshold", "low-balance alert below")
    # What payment reversals could not take; later top-ups pay it first.
    debt_money = money_column("debt", "debt")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(available_amount=F("balance") - F("reserved"))

    # --- permissions beyond Django's four ---------------------------------------------------

    def has_adjust_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("billing.make_adjustment")

    def has_change_status_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("billing.change_wallet")

    # --- columns and panels -------------------------------------------------------------------

    @admin.display(description="owner", ordering="owner__username")
    def owner_column(self, obj):
        owner = obj.owner
        return f"{owner.get_username()} <{owner.email}>" if owner.email else owner.get_username()

    @admin.display(description="held for the services")
    def holds(self, obj):
        return table(
            ["context", "held"],
            [(hold.context, money(hold.amount, obj.currency)) for hold in obj.holds.order_by("context")],
            empty="Nothing held.",
        )

    # Not named after the wallet's reverse accessors (auto_top_up, reversals): the admin
    # would take those for the model's fields.
    @admin.display(description="automatic top-up")
    def automatic_top_up(self, obj):
        auto = AutoTopUp.objects.filter(wallet=obj).select_related("payment_method").first()
        if auto is None:
            return "None."
        return format_html(
            "{}: when the available balance drops below {}, top up by {} with {}. {}.",
            link(admin_url("billing_autotopup_change", auto.pk), "Set up"),
            money(auto.threshold, obj.currency),
            money(auto.amount, obj.currency),
            str(auto.payment_method),
            auto_top_up_state(auto).capitalize(),
        )

    @admin.display(description="payment reversals")
    def payment_reversals(self, obj):
        """Money the card provider took back (refunds, disputes), the latest first."""
        rows = obj.reversals.select_related("top_up").order_by("-created_at")[:RECENT_LEDGER_ENTRIES]
        return table(
            ["when", "kind", "taken back", "from the balance", "left as debt", "top-up"],
            [
                (
                    link(
                        admin_url("billing_paymentreversal_change", reversal.pk),
                        f"{reversal.created_at:%Y-%m-%d %H:%M}",
                    ),
                    reversal.get_kind_display(),
                    money(reversal.amount, obj.currency),
                    money(reversal.taken, obj.currency),
                    money(reversal.debt_added, obj.currency),
                    link(
                        admin_url("billing_topup_change", reversal.top_up_id),
                        reversal.top_up.provider_reference or reversal.top_up_id,
                    ),
                )
                for reversal in rows
            ],
            empty="None.",
        )

    @admin.display(description=f"latest {RECENT_LEDGER_ENTRIES}")
    def recent_ledger(self, obj):
        entries = obj.ledger_entries.select_related("created_by").order_by("-sequence")[
            :RECENT_LEDGER_ENTRIES
        ]
        return table(
            ["#", "posted", "kind", "amount", "balance after", "description", "by"],
            [
                (
                    link(reverse("admin:billing_ledgerentry_change", args=[entry.pk]), entry.sequence),
                    entry.posted_at.strftime("%Y-%m-%d %H:%M"),
                    entry.get_kind_display(),
                    money(entry.amount, obj.currency),
                    money(entry.balance_after, obj.currency),
                    entry.description,
                    entry.created_by.get_username() if entry.created_by else "",
                )
                for entry in entries
            ],
            empty="No ledger entries yet.",
        )

    @admin.display(description="pages")
    def related(self, obj):
        wallet = {"wallet_id": obj.pk}
        ledger_count = obj.ledger_entries.count()
        return links_list(
            [
                (admin_url("auth_user_change", obj.owner_id), f"Customer {obj.owner.get_username()}"),
                (
                    admin_url("billing_ledgerentry_changelist", query=wallet_query(obj.pk)),
                    f"All {ledger_count} ledger entries",
                ),
                (admin_url("billing_hold_changelist", query=wallet_query(obj.pk)), "Holds"),
                (admin_url("billing_reservation_changelist", query=wallet_query(obj.pk)), "Reservations"),
                (admin_url("billing_topup_changelist", query=wallet_query(obj.pk)), "Top-ups"),
                (admin_url("billing_adjustment_changelist", query=wallet_query(obj.pk)), "Adjustments"),
                # Each selling context's pages about the wallet, as it registered them.
                *(
                    (admin_url(page.url_name, query=wallet), page.title)
                    for context in selling.contexts()
                    for page in context.wallet_pages
                ),
                (
                    admin_url("contracts_outboxmessage_changelist", query={**wallet, "delivery": "all"}),
                    "Events about this wallet",
                ),
            ]
        )

    # --- the adjustment page ----------------------------------------------------------------

    def get_urls(self):
        return [
            path(
                "<path:object_id>/adjust/",
                self.admin_site.admin_view(self.adjust_view),
                name="billing_wallet_adjust",
            ),
            *super().get_urls(),
        ]

    def object_links(self, request, object_id):
        if not self.has_adjust_permission(request):
            return []
        return [(reverse("admin:billing_wallet_adjust", args=[object_id]), "Adjust balance")]

    def adjust_view(self, request, object_id):
        wallet = operator_object(
            self, request, object_id, has_permission=self.has_adjust_permission, missing="No such wallet."
        )
        form = AdjustmentForm(request.POST or None, currency=wallet.currency)

        def describe(adjustment) -> str:
            entry = adjustment.ledger_entry
            return (
                f"{'Credited' if adjustment.amount > 0 else 'Debited'} "
                f"{format_minor_units(abs(adjustment.amount), wallet.currency)}: ledger entry "
                f"#{entry.sequence}, balance now {format_minor_units(entry.balance_after, wallet.currency)}."
            )

        done = book_from_form(
            self,
            request,
            form,
            wallet,
            book=lambda: services.wallet_adjust(
                wallet_id=wallet.pk,
                amount=form.signed_amount(),
                reason=form.cleaned_data["reason"],
                operator_id=request.user.pk,
                adjustment_id=form.cleaned_data[OPERATION_TOKEN],
            ),
            describe=describe,
            wallet_id=wallet.pk,
        )
        if done:
            return done
        return money_form_page(
            self,
            request,
            wallet,
            form,
            crumb="Adjust balance",
            title=f"Adjust the balance of {wallet.owner.get_username()}'s {wallet.currency} wallet",
            summary=[
                ("Balance", format_minor_units(wallet.balance, wallet.currency)),
                ("Reserved for the services", format_minor_units(wallet.reserved, wallet.currency)),
                (
                    "Available (the most a debit can take)",
                    format_minor_units(wallet.available, wallet.currency),
                ),
            ],
            explanation=(
                "An adjustment appends one ledger entry with your name and the reason; it is never "
                "edited or deleted. A mistake is corrected by another adjustment."
            ),
            submit_label="Make adjustment",
            form_id="adjustment_form",
        )

    # --- actions ------------------------------------------------------------------------------

    @admin.action(description="Adjust the balance of the selected wallet", permissions=["adjust"])
    def adjust_balance(self, request, queryset):
        wallets = list(queryset[:2])
        if len(wallets) != 1:
            self.message_user(request, "Select exactly one wallet to adjust.", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:billing_wallet_adjust", args=[wallets[0].pk]))

    @admin.action(
        description="Freeze the selected wallets (no spending, allowances included)",
        permissions=["change_status"],
    )
    def freeze_wallets(self, request, queryset):
        return self.run_service(
            request,
            queryset,
            lambda wallet: wallets.change_status(
                wallet_id=wallet.pk, status=Wallet.Status.FROZEN, actor_id=request.user.pk
            ),
            done="Frozen",
        )

    @admin.action(description="Unfreeze the selected wallets", permissions=["change_status"])
    def unfreeze_wallets(self, request, queryset):
        return self.run_service(
            request,
            queryset,
            lambda wallet: wallets.change_status(
                wallet_id=wallet.pk, status=Wallet.Status.ACTIVE, actor_id=request.user.pk
            ),
            done="Unfrozen",
        )
