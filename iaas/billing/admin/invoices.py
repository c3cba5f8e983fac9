"""Issued invoices, their lines and the gapless number series (I7), all read-only: a
database trigger refuses UPDATE and DELETE too."""

from __future__ import annotations

from django.contrib import admin

from iaas.common.admin import ReadOnlyAdmin, admin_url, link, money_column

from ..models import Invoice, InvoiceLine, InvoiceSeries
from .wallets import WalletRowAdmin


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
