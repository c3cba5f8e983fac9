"""Billing in the operator console. Money is read-only here: no form edits a balance,
a hold or a ledger entry, and nothing is deleted. A balance changes only through an
adjustment (the wallet's "Adjust balance" page), which books a ledger entry through
``services.wallet_adjust`` under the same invariants as every other write.

The adjustment and refund forms carry a one-time token that becomes the adjustment's or
refund's id: submitting the same page twice books once and then says "already booked"."""

from __future__ import annotations

import uuid

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import F, Q
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
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
    operation_token_field,
    parse_major_units,
    table,
)
from iaas.common.db import retry_transaction, run_after_rollback
from iaas.contracts import wallets
from iaas.contracts.errors import DomainError
from iaas.contracts.types import format_minor_units

from .. import services
from ..models import (
    Adjustment,
    Hold,
    Invoice,
    InvoiceLine,
    InvoiceSeries,
    LedgerEntry,
    Refund,
    Reservation,
    SettledCharge,
    TopUp,
    Wallet,
)

RECENT_LEDGER_ENTRIES = 10


def wallet_column(wallet: Wallet) -> str:
    """A wallet in a list: its owner and currency, linking to its page."""
    return link(
        reverse("admin:billing_wallet_change", args=[wallet.pk]),
        f"{wallet.owner.get_username()} · {wallet.currency}",
    )


def wallet_query(wallet_id) -> dict:
    return {"wallet__id__exact": wallet_id}


def money_form_page(
    model_admin, request, obj, form, *, crumb, title, summary, explanation, submit_label, form_id
):
    """The page of an operator's money form (an adjustment, a refund): the figures it
    acts on, what it will do, the form."""
    return TemplateResponse(
        request,
        "admin/billing/money_form.html",
        {
            **model_admin.admin_site.each_context(request),
            "title": title,
            "opts": model_admin.opts,
            "original": obj,
            "form": form,
            "crumb": crumb,
            "summary": summary,
            "explanation": explanation,
            "submit_label": submit_label,
            "form_id": form_id,
        },
    )


def operator_object(model_admin, request, object_id, *, has_permission, missing: str):
    """The object an operator's money page acts on, or 404 / 403 (enforced on the server)."""
    obj = model_admin.get_object(request, unquote(object_id))
    if obj is None:
        raise Http404(missing)
    if not (model_admin.has_view_permission(request, obj) and has_permission(request)):
        raise PermissionDenied
    return obj


def book_from_form(model_admin, request, form, obj, *, book, describe, wallet_id):
    """Book what a valid money form asks through Billing's service (retried on lock
    contention), with the form's one-time token as the booking's id. A refusal becomes
    the form's error and changes nothing; the work it asks for after the rollback (a
    release request) is done. A second submission of the same form books nothing and
    says so. Success is logged with the operator and the reason, told, and redirects to
    the wallet."""
    if request.method != "POST" or not form.is_valid():
        return None
    wallet_page = HttpResponseRedirect(reverse("admin:billing_wallet_change", args=[wallet_id]))
    try:
        booked = retry_transaction(book)()
    except services.AlreadyBooked as repeat:
        model_admin.message_user(
            request,
            f"Already booked by this form's first submission ({describe(repeat.booked).rstrip('.')}); "
            "nothing was booked again.",
            messages.WARNING,
        )
        return wallet_page
    except DomainError as refusal:
        # The outermost owner of the refused transaction: run what the refusal asked
        # for once it rolled back (retry_transaction did, unless a caller's transaction
        # was open around it).
        run_after_rollback(refusal)
        form.add_error(None, refusal.detail)
        return None
    done = describe(booked)
    model_admin.log_change(
        request, obj, f"{type(booked).__name__} {booked.pk}: {done} Reason: {booked.reason}"
    )
    model_admin.message_user(request, done, messages.SUCCESS)
    return wallet_page


def reason_field(help_text: str) -> forms.CharField:
    return forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=1000, help_text=help_text
    )


def clean_reason_text(text: str) -> str:
    reason = text.strip()
    if not reason:
        raise forms.ValidationError("Say why: the reason is kept with the ledger entry.")
    return reason


# --- Wallets ---------------------------------------------------------------------------------


class AdjustmentForm(forms.Form):
    direction = forms.ChoiceField(
        choices=[
            ("credit", "Credit: add to the balance"),
            ("debit", "Debit: take from the available balance"),
        ],
        widget=forms.RadioSelect,
    )
    amount = forms.CharField(max_length=20, help_text="In major units, e.g. 12.50")
    reason = reason_field("Required. Shown on the ledger entry; the customer may see it.")
    # The adjustment's id: a second submission of this page books nothing.
    operation_token = operation_token_field()

    def __init__(self, *args, currency: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["amount"].help_text = f"In {currency}, e.g. 12.50"

    def clean_amount(self) -> int:
        try:
            amount = parse_major_units(self.cleaned_data["amount"])
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None
        if amount == 0:
            raise forms.ValidationError("An adjustment is never zero.")
        if amount > settings.IAAS_MAX_TOP_UP:
            raise forms.ValidationError(
                f"At most {settings.IAAS_MAX_TOP_UP:,} minor units in one adjustment (IAAS_MAX_TOP_UP)."
            )
        return amount

    def clean_reason(self) -> str:
        return clean_reason_text(self.cleaned_data["reason"])

    def signed_amount(self) -> int:
        amount = self.cleaned_data["amount"]
        return -amount if self.cleaned_data["direction"] == "debit" else amount


class RefundForm(forms.Form):
    amount = forms.CharField(
        max_length=20, required=False, help_text="Leave empty to refund the whole charge."
    )
    reason = reason_field("Required. Shown on the refund's ledger entry; the customer may see it.")
    # The refund's id: a second submission of this page books nothing.
    operation_token = operation_token_field()

    def __init__(self, *args, currency: str, charged: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["amount"].help_text = f"In {currency}, at most {charged}. Leave empty to refund it all."

    def clean_amount(self) -> int | None:
        text = self.cleaned_data["amount"]
        if not text.strip():
            return None
        try:
            amount = parse_major_units(text)
        except ValueError as error:
            raise forms.ValidationError(str(error)) from None
        if amount == 0:
            raise forms.ValidationError("A refund is never zero.")
        return amount

    def clean_reason(self) -> str:
        return clean_reason_text(self.cleaned_data["reason"])


@admin.register(Wallet)
class WalletAdmin(ChangeHistoryAdmin, ReadOnlyAdmin):
    list_display = (
        "owner_column",
        "currency",
        "status",
        "balance_money",
        "reserved_money",
        "available_money",
        "created_at",
    )
    list_display_links = ("owner_column",)
    list_filter = ("status", "currency", "created_at")
    search_fields = ("owner__username", "owner__email", "id")
    search_help_text = "Customer username or email, or wallet id."
    list_select_related = ("owner",)
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    fieldsets = (
        (None, {"fields": ("id", "owner_column", "currency", "status", "created_at", "updated_at")}),
        ("Money", {"fields": ("balance_money", "reserved_money", "available_money", "holds")}),
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
        "holds",
        "recent_ledger",
        "related",
    )
    actions = ("adjust_balance", "freeze_wallets", "unfreeze_wallets")
    object_actions = (("freeze_wallets", "Freeze"), ("unfreeze_wallets", "Unfreeze"))

    balance_money = money_column("balance", "balance")
    reserved_money = money_column("reserved", "reserved")
    available_money = money_column("available", "available", ordering="available_amount")

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
                (admin_url("cloud_server_changelist", query=wallet), "Cloud servers"),
                (admin_url("cloud_charge_changelist", query=wallet), "Cloud charges"),
                (admin_url("cloud_allowance_changelist", query=wallet), "Cloud allowance"),
                (admin_url("hosting_subscription_changelist", query=wallet), "Hosting subscriptions"),
                (admin_url("hosting_charge_changelist", query=wallet), "Hosting charges"),
                (admin_url("hosting_allowance_changelist", query=wallet), "Hosting allowance"),
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


# --- The ledger and the reservation records ---------------------------------------------------------


class WalletRowAdmin(ReadOnlyAdmin):
    """A money table whose rows belong to a wallet: a wallet column linking to it."""

    @admin.display(description="wallet", ordering="wallet__owner__username")
    def wallet_link(self, obj):
        return wallet_column(obj.wallet)


class ChargeOrSourceFilter(admin.SimpleListFilter):
    """``?source_id=<id>``: the entries that book it, a top-up, an adjustment, a refund
    or a charge, whether the charge is the entry's first or one of the others it settles
    (a context's charge page links here by the charge's id). Offers no choices of its
    own: it is reached by such links."""

    title = "booking"
    parameter_name = "source_id"

    def lookups(self, request, model_admin):
        # One choice, the id asked for: a filter with no choices is never applied.
        asked = request.GET.get(self.parameter_name)
        return [(asked, f"booking {asked}")] if asked else []

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        try:
            source = uuid.UUID(value)
        except ValueError:
            return queryset.none()
        return queryset.filter(Q(source_id=source) | Q(charges__charge_id=source)).distinct()


def charges_table(request, charges, currency: str) -> str:
    """A charge entry's charges, each with its service, period, invoice line and refund
    (or the link to refund it, for an operator who may)."""
    may_refund = request.user.has_perm("billing.make_refund")

    def refund(charge):
        done = getattr(charge, "refund", None)
        if done is not None:
            return link(
                admin_url("billing_refund_change", done.pk),
                f"refunded {format_minor_units(done.amount, currency)}",
            )
        if may_refund:
            return link(reverse("admin:billing_settledcharge_refund", args=[charge.pk]), "Refund this charge")
        return "-"

    def period(charge):
        if charge.period_start is None or charge.period_end is None:
            return "-"
        return f"{charge.period_start:%Y-%m-%d %H:%M} to {charge.period_end:%Y-%m-%d %H:%M}"

    return table(
        ["charge", "for", "period", "amount", "invoice", "refund"],
        [
            (
                link(reverse("admin:billing_settledcharge_change", args=[charge.pk]), charge.description),
                link(
                    admin_url(f"{charge.context}_charge_change", charge.pk),
                    f"{charge.context} charge",
                ),
                period(charge),
                money(charge.amount, currency),
                link(admin_url("billing_invoice_change", charge.invoice_line.invoice_id), "invoiced")
                if charge.invoice_line_id
                else "not yet",
                refund(charge),
            )
            for charge in charges
        ],
        empty="No charges.",
    )


@admin.register(LedgerEntry)
class LedgerEntryAdmin(WalletRowAdmin):
    list_display = (
        "posted_at",
        "wallet_link",
        "sequence",
        "kind",
        "amount_money",
        "balance_after_money",
        "description",
        "created_by",
    )
    list_filter = (
        "kind",
        "context",
        "wallet__currency",
        "transaction_date",
        "posted_at",
        ChargeOrSourceFilter,
    )
    search_fields = (
        "wallet__owner__username",
        "wallet__owner__email",
        "wallet__id",
        "reference",
        "description",
        "=charges__charge_id",
    )
    search_help_text = "Customer username or email, wallet id, reference, description or charge id."
    list_select_related = ("wallet__owner", "created_by")
    date_hierarchy = "posted_at"
    readonly_fields = (
        "id",
        "wallet_link",
        "sequence",
        "kind",
        "amount_money",
        "balance_after_money",
        "transaction_date",
        "posted_at",
        "description",
        "reference",
        "context",
        "source",
        "created_by",
    )
    fields = readonly_fields
    change_form_template = "admin/billing/ledgerentry_change_form.html"

    amount_money = money_column("amount", "amount", currency="wallet.currency")
    balance_after_money = money_column("balance_after", "balance after", currency="wallet.currency")

    def get_ordering(self, request):
        # One wallet's book reads in its own order (I9); across wallets, newest first.
        if "wallet__id__exact" in request.GET:
            return ("-sequence",)
        return ("-posted_at", "-sequence")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        entry = self.get_object(request, unquote(object_id))
        if entry is not None and entry.kind == LedgerEntry.Kind.CHARGE:
            charges = list(
                entry.charges.select_related("invoice_line", "refund").order_by(
                    "transaction_date", "charge_id"
                )
            )
            extra_context = {
                **(extra_context or {}),
                "settled_charges": charges_table(request, charges, entry.wallet.currency),
                "settled_charges_count": len(charges),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="what it books")
    def source(self, obj):
        if obj.source_id is None:
            return "-"
        if obj.kind == LedgerEntry.Kind.CHARGE:
            return link(
                admin_url("billing_settledcharge_changelist", query={"ledger_entry__id__exact": obj.pk}),
                f"{obj.context} charges (below)",
            )
        if obj.kind == LedgerEntry.Kind.TOP_UP:
            return link(admin_url("billing_topup_change", obj.source_id), "top-up")
        if obj.kind == LedgerEntry.Kind.ADJUSTMENT:
            return link(admin_url("billing_adjustment_change", obj.source_id), "adjustment")
        if obj.kind == LedgerEntry.Kind.REFUND:
            return link(admin_url("billing_refund_change", obj.source_id), "refund")
        return str(obj.source_id)


@admin.register(SettledCharge)
class SettledChargeAdmin(WalletRowAdmin):
    """The charges Billing settled, each mapped to the ledger entry that booked it with
    its wallet's other charges of one context and run, to its invoice line, and to its
    refund: a refund gives back one charge, at most once and at most its amount."""

    list_display = (
        "transaction_date",
        "wallet_link",
        "context",
        "description",
        "amount_money",
        "entry",
        "invoiced",
        "refunded",
    )
    list_filter = ("context", "currency", "transaction_date")
    search_fields = (
        "=charge_id",
        "=subject_id",
        "description",
        "wallet__owner__username",
        "wallet__owner__email",
        "=wallet__id",
    )
    search_help_text = "Charge or service id (exact), description, customer username or email, wallet id."
    list_select_related = ("wallet__owner", "ledger_entry", "invoice_line__invoice", "refund")
    date_hierarchy = "transaction_date"
    ordering = ("-transaction_date", "charge_id")
    readonly_fields = (
        "charge_id",
        "wallet_link",
        "context",
        "charge",
        "subject_id",
        "description",
        "amount_money",
        "period_start",
        "period_end",
        "transaction_date",
        "created_at",
        "entry",
        "invoiced",
        "refunded",
    )
    fields = readonly_fields

    amount_money = money_column("amount", "amount")

    @admin.display(description="the context's charge")
    def charge(self, obj):
        return link(admin_url(f"{obj.context}_charge_change", obj.pk), f"{obj.context} charge {obj.pk}")

    @admin.display(description="ledger entry", ordering="ledger_entry__sequence")
    def entry(self, obj):
        entry = obj.ledger_entry
        return link(
            reverse("admin:billing_ledgerentry_change", args=[entry.pk]),
            format_html("#{} ({})", entry.sequence, entry.description),
        )

    @admin.display(description="invoice")
    def invoiced(self, obj):
        if obj.invoice_line_id is None:
            return "not yet"
        invoice = obj.invoice_line.invoice
        return link(reverse("admin:billing_invoice_change", args=[invoice.pk]), invoice.number)

    @admin.display(description="refund")
    def refunded(self, obj):
        refund = getattr(obj, "refund", None)
        if refund is None:
            return "-"
        return link(
            reverse("admin:billing_refund_change", args=[refund.pk]),
            format_minor_units(refund.amount, obj.currency),
        )

    # --- refunds ---------------------------------------------------------------------------------

    def has_refund_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("billing.make_refund")

    def get_urls(self):
        return [
            path(
                "<path:object_id>/refund/",
                self.admin_site.admin_view(self.refund_view),
                name="billing_settledcharge_refund",
            ),
            *super().get_urls(),
        ]

    def object_links(self, request, object_id):
        charge = self.get_object(request, unquote(object_id))
        if charge is None or not self.has_refund_permission(request) or hasattr(charge, "refund"):
            return []
        return [(reverse("admin:billing_settledcharge_refund", args=[object_id]), "Refund this charge")]

    def refund_view(self, request, object_id):
        charge = operator_object(
            self,
            request,
            object_id,
            has_permission=self.has_refund_permission,
            missing="No such settled charge.",
        )
        currency = charge.currency
        form = RefundForm(
            request.POST or None, currency=currency, charged=format_minor_units(charge.amount, currency)
        )

        def describe(refund) -> str:
            return (
                f"Refunded {format_minor_units(refund.amount, currency)} of the charge "
                f"{charge.description!r}: ledger entry #{refund.ledger_entry.sequence}, balance now "
                f"{format_minor_units(refund.ledger_entry.balance_after, currency)}."
            )

        done = book_from_form(
            self,
            request,
            form,
            charge,
            book=lambda: services.charge_refund(
                charge_id=charge.pk,
                amount=form.cleaned_data["amount"],
                reason=form.cleaned_data["reason"],
                operator_id=request.user.pk,
                refund_id=form.cleaned_data[OPERATION_TOKEN],
            ),
            describe=describe,
            wallet_id=charge.wallet_id,
        )
        if done:
            return done
        entry = charge.ledger_entry
        return money_form_page(
            self,
            request,
            charge,
            form,
            crumb="Refund",
            title=f"Refund a charge of {charge.wallet.owner.get_username()}'s wallet",
            summary=[
                ("Charged", format_minor_units(charge.amount, currency)),
                ("For", charge.description),
                ("On", charge.transaction_date.strftime("%Y-%m-%d %H:%M")),
                ("Settled by", f"ledger entry #{entry.sequence} ({entry.description})"),
            ],
            explanation=(
                "A refund appends one credit to the wallet's ledger with your name and the reason. "
                "A charge is refunded at most once, and by at most its amount; the other charges "
                "its ledger entry settled are not affected."
            ),
            submit_label="Refund",
            form_id="refund_form",
        )


@admin.register(Hold)
class HoldAdmin(WalletRowAdmin):
    list_display = ("wallet_link", "context", "amount_money")
    list_filter = ("context", "wallet__currency")
    search_fields = ("wallet__owner__username", "wallet__owner__email", "wallet__id")
    list_select_related = ("wallet__owner",)
    ordering = ("wallet__owner__username", "context")
    readonly_fields = ("wallet_link", "context", "amount_money", "related")
    fields = readonly_fields

    amount_money = money_column("amount", "held", currency="wallet.currency")

    @admin.display(description="related")
    def related(self, obj):
        return links_list(
            [
                (
                    admin_url(
                        "billing_reservation_changelist",
                        query={**wallet_query(obj.wallet_id), "context": obj.context},
                    ),
                    "Its reservation records",
                ),
                (
                    admin_url(f"{obj.context}_allowance_changelist", query={"wallet_id": obj.wallet_id}),
                    "The context's allowance",
                ),
            ]
        )


@admin.register(Reservation)
class ReservationAdmin(WalletRowAdmin):
    list_display = ("created_at", "wallet_link", "context", "kind", "amount_money", "source")
    list_filter = ("kind", "context", "wallet__currency", "created_at")
    search_fields = ("wallet__owner__username", "wallet__owner__email", "wallet__id", "source_id")
    list_select_related = ("wallet__owner",)
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    readonly_fields = (
        "id",
        "wallet_link",
        "context",
        "kind",
        "amount_money",
        "source",
        "ledger_entry",
        "created_at",
    )
    fields = readonly_fields

    amount_money = money_column("amount", "amount", currency="wallet.currency")

    @admin.display(description="applies")
    def source(self, obj):
        if obj.kind == Reservation.Kind.CAPTURE:
            return link(admin_url(f"{obj.context}_charge_change", obj.source_id), f"{obj.context} charge")
        if obj.kind == Reservation.Kind.RELEASE:
            return link(admin_url(f"{obj.context}_release_change", obj.source_id), f"{obj.context} release")
        return "-"


# --- Top-ups and adjustments ----------------------------------------------------------------------


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
            request, queryset, lambda top_up: services.top_up_fail(top_up_id=top_up.pk), done="Marked failed"
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


def line_charges(line) -> str:
    count = line.charges.count()
    return link(
        admin_url("billing_settledcharge_changelist", query={"invoice_line__id__exact": line.pk}),
        f"{count} charge{'s' if count != 1 else ''}",
    )


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    fields = (
        "transaction_date",
        "context",
        "subject_id",
        "description",
        "period_start",
        "period_end",
        "amount_money",
        "charges_link",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    amount_money = money_column("amount", "amount", currency="invoice.currency")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="settled charges")
    def charges_link(self, obj):
        return line_charges(obj)


@admin.register(Invoice)
class InvoiceAdmin(WalletRowAdmin):
    """Issued invoices: immutable (a database trigger refuses UPDATE and DELETE too)."""

    list_display = (
        "number",
        "issued_at",
        "owner",
        "wallet_link",
        "period_start",
        "period_end",
        "total_money",
    )
    list_filter = ("currency", "series", "issued_at", "period_start")
    search_fields = ("number", "owner__username", "owner__email", "wallet__id")
    search_help_text = "Invoice number, customer username or email, or wallet id."
    list_select_related = ("owner", "wallet__owner")
    date_hierarchy = "issued_at"
    ordering = ("-issued_at", "-sequence")
    readonly_fields = (
        "id",
        "number",
        "series",
        "sequence",
        "owner",
        "wallet_link",
        "currency",
        "period_start",
        "period_end",
        "issued_at",
        "total_money",
        "ledger_sequence",
    )
    fields = readonly_fields
    inlines = (InvoiceLineInline,)

    total_money = money_column("total", "total")


@admin.register(InvoiceLine)
class InvoiceLineAdmin(ReadOnlyAdmin):
    list_display = ("invoice", "transaction_date", "context", "description", "amount_money")
    list_filter = ("context", "invoice__currency", "transaction_date")
    search_fields = (
        "invoice__number",
        "description",
        "invoice__owner__username",
        "invoice__owner__email",
        "invoice__wallet__id",
    )
    list_select_related = ("invoice",)
    ordering = ("-transaction_date",)
    readonly_fields = (
        "invoice",
        "transaction_date",
        "context",
        "subject_id",
        "description",
        "period_start",
        "period_end",
        "amount_money",
        "charges_link",
    )
    fields = readonly_fields

    amount_money = money_column("amount", "amount", currency="invoice.currency")

    @admin.display(description="settled charges")
    def charges_link(self, obj):
        return line_charges(obj)


@admin.register(InvoiceSeries)
class InvoiceSeriesAdmin(ReadOnlyAdmin):
    """The gapless counters (I7): moved only by issuing an invoice."""

    list_display = ("series", "last_number")
    search_fields = ("series",)
    ordering = ("-series",)
    readonly_fields = ("series", "last_number")
    fields = readonly_fields


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
