"""The ledger in the operator console: ledger entries, the charges Billing settled (with
the page that refunds one), and what is reserved for the services (holds and their
reservation records). All read-only: the ledger is appended to, never edited."""

from __future__ import annotations

import uuid

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.db.models import Q
from django.urls import path, reverse
from django.utils.html import format_html

from iaas.common.admin import OPERATION_TOKEN, admin_url, link, links_list, money, money_column, table
from iaas.contracts.types import format_minor_units

from .. import services
from ..models import Hold, LedgerEntry, Reservation, SettledCharge
from .forms import RefundForm, book_from_form, money_form_page, operator_object
from .wallets import WalletRowAdmin, wallet_query


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
        if obj.kind == LedgerEntry.Kind.REVERSAL and obj.reference.startswith("debt:"):
            return link(admin_url("billing_topup_change", obj.source_id), "the top-up that paid the debt")
        if obj.kind == LedgerEntry.Kind.REVERSAL:
            return link(admin_url("billing_paymentreversal_change", obj.source_id), "payment reversal")
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
