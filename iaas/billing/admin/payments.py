"""Card payments in the operator console, each with its id at the provider linked to the
provider's dashboard (Stripe's, in test mode for a test key): the events the provider sent
us and what applying each did, payments parked for an operator (resolved here, by
Finance), payment reversals (refunds and disputes), the customers' saved cards and
automatic top-ups, and their records at the provider. All read-only: money moves only
through Billing's services, and nothing here stores or shows a secret."""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib import admin
from django.db.models import F
from django.utils.html import format_html

from iaas.common.admin import ReadOnlyAdmin, admin_url, link, money, money_column, user_link

from ..models import AutoTopUp, ParkedPayment, PaymentCustomer, PaymentEvent, PaymentMethod, PaymentReversal
from ..payments import finishing
from .wallets import WalletRowAdmin, auto_top_up_state

STRIPE_DASHBOARD = "https://dashboard.stripe.com"
# What Stripe's dashboard has a page for, by the id's prefix.
STRIPE_PAGES = {"pi": "payments", "ch": "payments", "evt": "events", "cus": "customers", "dp": "disputes"}
STRIPE_ID = re.compile(r"(?P<prefix>[a-z]+)_[A-Za-z0-9_]+")


def stripe_dashboard_url(object_id: str) -> str | None:
    """The page of a Stripe object (``pi_...``, ``evt_...``, ``cus_...``, ``dp_...``) in
    Stripe's dashboard, in test mode when the configured key is a test key (sk_test_ or
    rk_test_); None for an id it has no page for."""
    found = STRIPE_ID.fullmatch(object_id)
    page = STRIPE_PAGES.get(found["prefix"]) if found else None
    if page is None:
        return None
    key = settings.IAAS_STRIPE_SECRET_KEY
    mode = "/test" if key.startswith(("sk_test_", "rk_test_")) else ""
    return f"{STRIPE_DASHBOARD}{mode}/{page}/{object_id}"


def provider_link(provider: str, object_id: str) -> str:
    """An id at the payment provider, linked to its page in the provider's dashboard where
    there is one (Stripe), in a new tab."""
    if not object_id:
        return "-"
    url = stripe_dashboard_url(object_id) if provider == "stripe" else None
    if url is None:
        return object_id
    return format_html('<a href="{}" target="_blank" rel="noopener noreferrer">{}</a>', url, object_id)


class ResolvedFilter(admin.SimpleListFilter):
    title = "resolved"
    parameter_name = "resolved"

    def lookups(self, request, model_admin):
        return [("no", "Waiting for an operator"), ("yes", "Resolved")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.register(PaymentEvent)
class PaymentEventAdmin(ReadOnlyAdmin):
    """Each event a provider sent to our webhook, recorded once, with what applying it did."""

    list_display = ("received_at", "provider", "type", "event", "object_link", "outcome", "occurred_at")
    list_filter = ("type", "outcome", "provider", "received_at")
    search_fields = ("event_id", "object_id")
    search_help_text = "The provider's event id (evt_...) or the id of what it is about (pi_, ch_, dp_...)."
    date_hierarchy = "received_at"
    ordering = ("-received_at", "-id")
    readonly_fields = ("provider", "event", "type", "object_link", "outcome", "occurred_at", "received_at")
    fields = readonly_fields

    @admin.display(description="event", ordering="event_id")
    def event(self, obj):
        return provider_link(obj.provider, obj.event_id)

    @admin.display(description="about", ordering="object_id")
    def object_link(self, obj):
        return provider_link(obj.provider, obj.object_id)


@admin.register(ParkedPayment)
class ParkedPaymentAdmin(ReadOnlyAdmin):
    """Payments the provider says succeeded that matched no top-up (ARCHITECTURE.md, "Money
    coming in"): never dropped, never guessed onto a wallet. An operator places the money
    (an adjustment crediting the right wallet, or a refund at the provider) and then marks
    the payment resolved, saying what was done; until then reconcile fails."""

    list_display = ("parked_at", "payment", "amount_money", "why", "status", "resolved_by")
    list_filter = (ResolvedFilter, "provider", "currency", "parked_at")
    search_fields = ("payment_reference", "event_id", "why", "resolution")
    search_help_text = (
        "The provider's payment id (pi_...), its event id, why it was parked, or the resolution."
    )
    list_select_related = ("resolved_by",)
    date_hierarchy = "parked_at"
    # The ones waiting for an operator first, the newest of each first.
    ordering = (F("resolved_at").asc(nulls_first=True), "-parked_at", "id")
    readonly_fields = (
        "id",
        "provider",
        "payment",
        "amount_money",
        "why",
        "metadata",
        "event",
        "parked_at",
        "status",
        "resolved_at",
        "resolver",
        "resolution",
        "what_to_do",
    )
    fields = readonly_fields
    actions = ("resolve_parked_payments",)
    object_actions = (("resolve_parked_payments", "Mark resolved"),)

    amount_money = money_column("amount", "amount")

    def has_resolve_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("billing.change_parkedpayment")

    @admin.display(description="payment", ordering="payment_reference")
    def payment(self, obj):
        return provider_link(obj.provider, obj.payment_reference)

    @admin.display(description="event")
    def event(self, obj):
        return provider_link(obj.provider, obj.event_id)

    @admin.display(description="status", ordering="resolved_at")
    def status(self, obj):
        if obj.resolved_at is None:
            return format_html('<span class="iaas-status-bad">{}</span>', "waiting for an operator")
        return format_html('<span class="iaas-status-ok">{}</span>', "resolved")

    @admin.display(description="resolved by")
    def resolver(self, obj):
        return user_link(obj.resolved_by)

    @admin.display(description="what to do")
    def what_to_do(self, obj):
        if obj.resolved_at is not None:
            return "Nothing: resolved."
        return (
            "Find the payment at the provider (the link above) and who paid it. Either credit the "
            "customer's wallet with an adjustment (the wallet's 'Adjust balance' page, naming this "
            "payment in the reason), or refund the payment at the provider. Then mark it resolved, "
            "saying which: reconcile fails until every parked payment is resolved."
        )

    @admin.action(description="Mark resolved: the money was placed (say how)", permissions=["resolve"])
    def resolve_parked_payments(self, request, queryset):
        if response := self.confirm(
            request,
            queryset,
            title="Mark parked payments resolved",
            warning="Marking a payment resolved moves no money: credit the wallet (an adjustment) or "
            "refund the payment at the provider first. What you write is kept with the payment.",
            reason_label="Resolution (what was done with the money)",
        ):
            return response
        resolution = self.confirmed_reason(request)
        return self.run_service(
            request,
            queryset,
            lambda parked: finishing.parked_payment_resolve(
                parked_payment_id=parked.pk, resolution=resolution, operator_id=request.user.pk
            ),
            done="Resolved",
        )


@admin.register(PaymentReversal)
class PaymentReversalAdmin(WalletRowAdmin):
    """Money the provider took back from a top-up (a card refund, a dispute): what was
    taken from the wallet (its ledger entry) and what was left as the wallet's debt."""

    list_display = (
        "created_at",
        "wallet_link",
        "kind",
        "amount_money",
        "taken_money",
        "debt_added_money",
        "top_up_link",
        "reference",
        "frozen_at",
    )
    list_filter = ("kind", "provider", "wallet__currency", "created_at")
    search_fields = (
        "wallet__owner__username",
        "wallet__owner__email",
        "=wallet__id",
        "reference",
        "top_up__provider_reference",
    )
    search_help_text = (
        "Customer username or email, wallet id, the provider's reference or payment id (pi_...)."
    )
    list_select_related = ("wallet__owner", "top_up")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "id")
    readonly_fields = (
        "id",
        "wallet_link",
        "kind",
        "provider",
        "reference_link",
        "amount_money",
        "taken_money",
        "debt_added_money",
        "top_up_link",
        "payment",
        "entry",
        "created_at",
        "frozen_at",
    )
    fields = readonly_fields

    amount_money = money_column("amount", "taken back", currency="wallet.currency")
    taken_money = money_column("taken", "taken from the wallet", currency="wallet.currency")
    debt_added_money = money_column("debt_added", "left as debt", currency="wallet.currency")

    @admin.display(description="top-up")
    def top_up_link(self, obj):
        top_up = obj.top_up
        return link(admin_url("billing_topup_change", top_up.pk), money(top_up.amount, top_up.currency))

    @admin.display(description="reference")
    def reference_link(self, obj):
        # A dispute's reference is its id (dp_...); a refund's is its charge's refunded total.
        return provider_link(obj.provider, obj.reference)

    @admin.display(description="payment at the provider")
    def payment(self, obj):
        return provider_link(obj.provider, obj.top_up.provider_reference)

    @admin.display(description="ledger entry")
    def entry(self, obj):
        if obj.ledger_entry_id is None:
            return "None: nothing was available to take; all of it is debt."
        entry = obj.ledger_entry
        return link(
            admin_url("billing_ledgerentry_change", entry.pk),
            format_html("#{} ({})", entry.sequence, entry.description),
        )


class OwnerRowAdmin(ReadOnlyAdmin):
    """A row of a customer's (not of one wallet): found by the customer's name, email, or the
    id of any of their wallets."""

    search_fields = ("owner__username", "owner__email", "=owner__wallets__id")
    search_help_text = "Customer username or email, or the id of one of their wallets."
    list_select_related = ("owner",)

    @admin.display(description="customer", ordering="owner__username")
    def customer(self, obj):
        return user_link(obj.owner)


@admin.register(PaymentMethod)
class PaymentMethodAdmin(OwnerRowAdmin):
    """A customer's saved cards: brand, last four digits and expiry, as the provider told
    them; nothing secret is stored."""

    list_display = ("created_at", "customer", "card", "status", "provider", "provider_method_id")
    list_filter = ("status", "provider", "brand", "created_at")
    search_fields = (*OwnerRowAdmin.search_fields, "provider_method_id", "setup_reference")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "id")
    readonly_fields = (
        "id",
        "customer",
        "provider",
        "status",
        "card",
        "provider_method_id",
        "setup_reference",
        "failure_message",
        "created_at",
        "activated_at",
        "removed_at",
    )
    fields = readonly_fields

    @admin.display(description="card")
    def card(self, obj):
        if not obj.last4:
            return "-"
        expiry = f", expires {obj.exp_month:02d}/{obj.exp_year}" if obj.exp_month and obj.exp_year else ""
        return f"{obj.brand or 'card'} ****{obj.last4}{expiry}"


@admin.register(PaymentCustomer)
class PaymentCustomerAdmin(OwnerRowAdmin):
    """Each customer's record at a card provider (Stripe's cus_...)."""

    list_display = ("created_at", "customer", "provider", "reference")
    list_filter = ("provider", "created_at")
    search_fields = (*OwnerRowAdmin.search_fields, "provider_customer_id")
    ordering = ("-created_at", "id")
    readonly_fields = ("customer", "provider", "reference", "created_at")
    fields = readonly_fields

    @admin.display(description="at the provider", ordering="provider_customer_id")
    def reference(self, obj):
        return provider_link(obj.provider, obj.provider_customer_id)


@admin.register(AutoTopUp)
class AutoTopUpAdmin(WalletRowAdmin):
    """Wallets' automatic top-ups: when a spend takes the available balance below the
    threshold, the saved card is charged the amount (``payments.auto``)."""

    list_display = ("wallet_link", "threshold_money", "amount_money", "method", "state", "last_attempt_at")
    list_filter = ("wallet__currency", "consecutive_failures")
    search_fields = ("wallet__owner__username", "wallet__owner__email", "=wallet__id")
    search_help_text = "Customer username or email, or wallet id."
    list_select_related = ("wallet__owner", "payment_method")
    ordering = ("-updated_at", "wallet_id")
    readonly_fields = (
        "wallet_link",
        "threshold_money",
        "amount_money",
        "method",
        "state",
        "due_at",
        "next_attempt_at",
        "claimed_until",
        "consecutive_failures",
        "last_attempt_at",
        "last_failure_code",
        "last_failure_message",
        "created_at",
        "updated_at",
    )
    fields = readonly_fields

    threshold_money = money_column("threshold", "below", currency="wallet.currency")
    amount_money = money_column("amount", "top up by", currency="wallet.currency")

    @admin.display(description="card")
    def method(self, obj):
        return link(admin_url("billing_paymentmethod_change", obj.payment_method_id), str(obj.payment_method))

    @admin.display(description="state")
    def state(self, obj):
        return auto_top_up_state(obj)
